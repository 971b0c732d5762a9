"""MLflow store -> one pandas row per suite run, plus each task version's result schema.

Reads only what the suite's contract puts in the store, through :class:`suite.tracking.Tracker`:
the ``suite.*`` and ``privacy.*`` tags, the params (the resolved config), the metrics, and the
artifacts ``result.json`` (task version, metric directions and units, Pareto pairs) and
``environment.json``. FINISHED, FAILED and KILLED runs are kept; RUNNING ones are not.

>>> runs, schemas = collect(Tracker(write=False))   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from leaderboard.schema import TaskSchema
from suite.tracking import TERMINAL, Tracker

# Contract tags -> the short column names used from here on.
_TAGS = {"suite.task": "task", "suite.tier": "tier", "suite.method": "method", "suite.seed": "seed",
         "suite.config_hash": "config_hash", "suite.git_commit": "git_commit", "suite.version": "suite_version",
         "privacy.unit": "privacy_unit", "privacy.accountant": "accountant", "privacy.sampler": "sampler",
         "suite.failure_reason": "failure_reason"}
_ENV = {"python": "python", "torch": "torch", "cpu": "cpu", "torch_threads": "threads", "cpu_count": "cpu_count"}


def collect(tracker: Tracker) -> tuple[pd.DataFrame, dict[tuple[str, str], TaskSchema]]:
    """Every ended suite run of the store as a row, and ``(task, task_version) -> schema``.

    Columns: ``run_id, status, start_time, end_time, artifact_uri, task, tier, task_version, method, seed,
    config_hash, git_commit, suite_version, privacy_unit, accountant, sampler, failure_reason``,
    ``env_*`` (python, torch, cpu, threads), ``params.<key>`` and ``metrics.<key>``. Rows are
    sorted by task, tier, start time and run id, so that a rebuild sees the same order.
    """
    raw = tracker.frame()
    if raw.empty:
        return _empty(), {}
    runs = raw.rename(columns={f"tags.{k}": v for k, v in _TAGS.items()})
    for column in _TAGS.values():
        if column not in runs:
            runs[column] = ""
    runs = runs[runs["task"].fillna("").ne("") & runs["status"].isin(TERMINAL)].copy()
    if runs.empty:  # only RUNNING runs, or runs that were not logged by the suite
        return _empty(), {}
    runs[list(_TAGS.values())] = runs[list(_TAGS.values())].fillna("")
    runs["seed"] = pd.to_numeric(runs["seed"], errors="coerce").astype("Int64")
    schemas = _read_results(runs, tracker)
    runs["task_version"] = _task_versions(runs, schemas)
    env = [_environment(tracker, row) for row in runs[["run_id", "artifact_uri", "status"]].itertuples()]
    runs = pd.concat([runs.reset_index(drop=True), pd.DataFrame(env, columns=[f"env_{v}" for v in _ENV.values()])],
                     axis=1)
    keep = ["run_id", "status", "start_time", "end_time", "artifact_uri", "task_version", *_TAGS.values(),
            *[f"env_{v}" for v in _ENV.values()],
            *sorted(c for c in runs if c.startswith("params.")), *sorted(c for c in runs if c.startswith("metrics."))]
    runs = runs[keep].sort_values(["task", "tier", "start_time", "run_id"], kind="stable").reset_index(drop=True)
    return runs, {key: schema for key, schema in sorted(schemas.by_version.items())}


def _empty() -> pd.DataFrame:
    columns = ["run_id", "status", "start_time", "end_time", "artifact_uri", "task_version", *_TAGS.values(),
               *[f"env_{v}" for v in _ENV.values()]]
    return pd.DataFrame(columns=columns)


class _Results:
    """``result.json`` read once per config hash: hash -> version, and the schema of each task version."""

    def __init__(self) -> None:
        self.version_of_hash: dict[str, str] = {}
        self.by_version: dict[tuple[str, str], TaskSchema] = {}


def _read_results(runs: pd.DataFrame, tracker: Tracker) -> _Results:
    results = _Results()
    finished = runs[runs["status"] == "FINISHED"].sort_values(["start_time", "run_id"], ascending=False)
    for row in finished.drop_duplicates("config_hash").itertuples():
        payload = tracker.read_json(row.run_id, "result.json", artifact_uri=row.artifact_uri)
        if not payload:
            continue
        version = str(payload.get("task_version", "?"))
        results.version_of_hash[row.config_hash] = version
        key = (row.task, version)
        schema = results.by_version.setdefault(key, TaskSchema(row.task, version))
        schema.merge(payload)
    return results


def _task_versions(runs: pd.DataFrame, results: _Results) -> list[str]:
    """Each run's task version: its ``suite.task_version`` tag, else its config's ``result.json``, else ``?``."""
    tagged = runs["tags.suite.task_version"] if "tags.suite.task_version" in runs else pd.Series("", runs.index)
    return [tag or results.version_of_hash.get(digest, "?")
            for digest, tag in zip(runs["config_hash"], tagged.fillna(""))]


def _environment(tracker: Tracker, row: Any) -> list[Any]:
    """python, torch, cpu, threads, cpu count of the run's ``environment.json`` (finished runs have one)."""
    env = None
    if row.status == "FINISHED":
        env = tracker.read_json(row.run_id, "environment.json", artifact_uri=row.artifact_uri)
    env = env or {}
    return [env.get(key) for key in _ENV]
