"""Derived metrics that compare a run with its reference run (e.g. DP-SGD vs non-private)."""

from __future__ import annotations

from suite.tracking import RunRecord, Tracker

TIMED = "compute/train_s"
SLOWDOWN = "compute/slowdown"


def link_slowdowns(tracker: Tracker, family: str) -> int:
    """Log ``compute/slowdown`` (train time / reference's train time) on FINISHED runs lacking it.

    A run names its reference by the tag ``suite.reference_hash``; the newest FINISHED run
    of that hash is used. Returns how many runs got a slowdown.
    """
    runs = tracker.runs(family, status="FINISHED")
    newest: dict[str, RunRecord] = {}
    for run in runs:
        newest.setdefault(run.tags.get("suite.config_hash", ""), run)
    linked = 0
    for run in runs:
        ref = newest.get(run.tags.get("suite.reference_hash", ""))
        if ref is None or SLOWDOWN in run.metrics:
            continue
        mine, theirs = run.metrics.get(TIMED), ref.metrics.get(TIMED)
        if mine and theirs:
            tracker.log_metrics(run.run_id, {SLOWDOWN: mine / theirs})
            linked += 1
    return linked
