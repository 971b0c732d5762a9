"""The order a sweep starts its cells in: longest first.

With ``jobs`` workers, a long cell started last leaves the other workers idle while it finishes;
starting the longest cells first (the LPT rule) keeps every worker busy until the end. A cell's
expected duration is, in this order of preference:

1. the duration of the newest FINISHED run of the same config hash (a ``--force`` rerun);
2. the median duration of the FINISHED runs of the same task, tier and method whose params agree
   with the cell's config on the most keys (other seeds, task versions or settings of that method);
3. the tier file's ``estimates`` (:mod:`suite.config`): the first entry whose keys all match;
4. else :data:`DEFAULT_S`.

A run's duration is its ``compute/wall_s``: the cell's own time, without the start of a worker
process (the first cell of a sweep also pays for the fork server's imports), or else its MLflow
run's start to end.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from runners.cell import Cell
from suite.config import canonical_json
from suite.task import get_task
from suite.tracking import RunRecord, Tracker

DEFAULT_S = 10.0


def longest_first(cells: Sequence[Cell], tracker: Tracker) -> list[Cell]:
    """``cells`` sorted by expected duration, longest first (ties keep the grid's order)."""
    expected = expected_durations(cells, tracker)
    return sorted(cells, key=lambda cell: -expected[cell.hash])


def expected_durations(cells: Sequence[Cell], tracker: Tracker) -> dict[str, float]:
    """Config hash -> the seconds the cell is expected to take (see the module's docstring)."""
    history: dict[str, list[RunRecord]] = {}
    out = {}
    for cell in cells:
        if cell.task not in history:
            history[cell.task] = [r for r in tracker.runs(cell.task, status="FINISHED") if _seconds(r) is not None]
        out[cell.hash] = estimate(cell, history[cell.task])
    return out


def estimate(cell: Cell, runs: Iterable[RunRecord]) -> float:
    """The expected seconds of ``cell`` from finished runs of its task (newest first) and its tier file."""
    params = {key: _param_text(value) for key, value in cell.config.items()}
    best: list[float] = []
    best_score = -1
    for run in runs:
        if run.tags.get("suite.tier") != cell.tier or run.params.get("method") != params.get("method"):
            continue
        if run.tags.get("suite.config_hash") == cell.hash:
            return _seconds(run)  # type: ignore[return-value]
        score = sum(run.params.get(key) == text for key, text in params.items() if key != "seed")
        if score > best_score:
            best, best_score = [], score
        if score == best_score:
            best.append(_seconds(run))  # type: ignore[arg-type]
    if best:
        return statistics.median(best)
    return tier_estimate(cell)


def tier_estimate(cell: Cell) -> float:
    """The first ``estimates`` entry of the cell's tier file whose keys all match its config."""
    for entry in get_task(cell.task).tier(cell.tier).estimates:
        if all(cell.config.get(key) == value for key, value in entry.items() if key != "seconds"):
            return float(entry["seconds"])
    return DEFAULT_S


def _seconds(run: RunRecord) -> float | None:
    if "compute/wall_s" in run.metrics:
        return run.metrics["compute/wall_s"]
    if run.start_time is None or run.end_time is None:
        return None
    return max(0.0, (run.end_time - run.start_time) / 1000)


def _param_text(value: Any) -> str:
    """A config value as the tracker logs it as a param (strings as they are, the rest canonical JSON)."""
    return value if isinstance(value, str) else canonical_json(value)


__all__ = ["DEFAULT_S", "estimate", "expected_durations", "longest_first"]
