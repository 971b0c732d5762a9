"""MLflow store -> one pandas row per suite run, plus each task version's result schema.

Reads only what the suite's contract puts in the store: the ``suite.*`` and ``privacy.*``
tags, the params (the resolved config), the metrics, and the artifacts ``result.json``
(task version, metric directions and units, Pareto pairs), ``config.json`` and
``environment.json``. FINISHED, FAILED and KILLED runs are kept; RUNNING ones are not.

>>> runs, schemas = collect(Tracker())   # doctest: +SKIP
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd

from leaderboard.schema import TaskSchema, registered_schema
from suite.config import config_values_hash
from suite.tracking import TERMINAL, Tracker

# Contract tags -> the short column names used from here on.
_TAGS = {"suite.task": "task", "suite.tier": "tier", "suite.method": "method", "suite.seed": "seed",
         "suite.config_hash": "config_hash", "suite.git_commit": "git_commit", "suite.version": "suite_version",
         "privacy.unit": "privacy_unit", "privacy.accountant": "accountant", "privacy.sampler": "sampler",
         "suite.failure_reason": "failure_reason"}
_ENV = {"python": "python", "torch": "torch", "cpu": "cpu", "torch_threads": "threads", "cpu_count": "cpu_count"}


def collect(tracker: Tracker) -> tuple[pd.DataFrame, dict[tuple[str, str], TaskSchema]]:
    """Every ended suite run of the store as a row, and ``(task, task_version) -> schema``.

    Columns: ``run_id, status, start_time, end_time, task, tier, task_version, method, seed,
    config_hash, git_commit, suite_version, privacy_unit, accountant, sampler, failure_reason``,
    ``env_*`` (python, torch, cpu, threads), ``params.<key>`` and ``metrics.<key>``. Rows are
    sorted by task, tier, start time and run id, so that a rebuild sees the same order.
    """
    raw = _search_runs(tracker)
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
    with _artifact_reader(tracker) as read:
        schemas = _read_results(runs, read)
        runs["task_version"] = _task_versions(runs, schemas, read)
        env = [_environment(read, row) for row in runs[["run_id", "artifact_uri", "status"]].itertuples()]
    runs = pd.concat([runs.reset_index(drop=True), pd.DataFrame(env, columns=[f"env_{v}" for v in _ENV.values()])],
                     axis=1)
    keep = ["run_id", "status", "start_time", "end_time", "task_version", *_TAGS.values(),
            *[f"env_{v}" for v in _ENV.values()],
            *sorted(c for c in runs if c.startswith("params.")), *sorted(c for c in runs if c.startswith("metrics."))]
    runs = runs[keep].sort_values(["task", "tier", "start_time", "run_id"], kind="stable").reset_index(drop=True)
    return runs, {key: schema for key, schema in sorted(schemas.by_version.items())}


def _search_runs(tracker: Tracker) -> pd.DataFrame:
    """``mlflow.search_runs`` over every experiment of the tracker's store."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracker.uri)
    try:
        experiments = [e.experiment_id for e in tracker.client.search_experiments()]
        if not experiments:
            return pd.DataFrame()
        return mlflow.search_runs(experiment_ids=experiments, output_format="pandas")
    finally:
        mlflow.set_tracking_uri(previous)


def _empty() -> pd.DataFrame:
    columns = ["run_id", "status", "start_time", "end_time", "task_version", *_TAGS.values(),
               *[f"env_{v}" for v in _ENV.values()]]
    return pd.DataFrame(columns=columns)


class _Results:
    """``result.json`` read once per config hash: hash -> version, and the schema of each task version."""

    def __init__(self) -> None:
        self.version_of_hash: dict[str, str] = {}
        self.by_version: dict[tuple[str, str], TaskSchema] = {}


def _read_results(runs: pd.DataFrame, read: Any) -> _Results:
    results = _Results()
    finished = runs[runs["status"] == "FINISHED"].sort_values(["start_time", "run_id"], ascending=False)
    for row in finished.drop_duplicates("config_hash").itertuples():
        payload = read(row.run_id, row.artifact_uri, "result.json")
        if not payload:
            continue
        version = str(payload.get("task_version", "?"))
        results.version_of_hash[row.config_hash] = version
        key = (row.task, version)
        schema = results.by_version.setdefault(key, TaskSchema(row.task, version))
        schema.merge(payload)
    for (task, version), schema in results.by_version.items():
        schema.fill_from(registered_schema(task, version))
    return results


def _task_versions(runs: pd.DataFrame, results: _Results, read: Any) -> list[str]:
    """Each run's task version: its ``suite.task_version`` tag, else its config's ``result.json``, else
    recomputed from its config hash (stores written before the tag existed).

    A run that never finished has no ``result.json``; its hash is SHA-256 of its config and the
    task version, so trying the versions known for its task finds the one it ran under.
    """
    known: dict[str, set[str]] = {}
    for task, version in results.by_version:
        known.setdefault(task, set()).add(version)
    tagged = runs["tags.suite.task_version"] if "tags.suite.task_version" in runs else pd.Series("", runs.index)
    out = []
    for row, tag in zip(runs[["run_id", "artifact_uri", "task", "config_hash"]].itertuples(), tagged.fillna("")):
        version = tag or results.version_of_hash.get(row.config_hash)
        if version is None:
            version = _version_from_hash(read(row.run_id, row.artifact_uri, "config.json"), row.task,
                                         row.config_hash, known.get(row.task, set()))
        out.append(version)
    return out


def _version_from_hash(payload: dict[str, Any] | None, task: str, digest: str, candidates: set[str]) -> str:
    registered = registered_schema(task, None)
    tried = sorted(candidates | ({registered.version} if registered else set()))
    config = (payload or {}).get("config")
    for version in tried:
        if config is not None and config_values_hash(task, version, config) == digest:
            return version
    return "?"


def _environment(read: Any, row: Any) -> list[Any]:
    """python, torch, cpu, threads, cpu count of the run's ``environment.json`` (finished runs have one)."""
    env = read(row.run_id, row.artifact_uri, "environment.json") if row.status == "FINISHED" else None
    env = env or {}
    return [env.get(key) for key in _ENV]


@contextmanager
def _artifact_reader(tracker: Tracker) -> Iterator[Any]:
    """A function ``read(run_id, artifact_uri, name) -> parsed JSON or None``.

    Local artifact stores (``file://``) are read in place; any other store goes through
    ``MlflowClient.download_artifacts`` into a temporary folder.
    """
    with tempfile.TemporaryDirectory(prefix="leaderboard-") as tmp:

        def read(run_id: str, artifact_uri: str, name: str) -> dict[str, Any] | None:
            try:
                parsed = urlparse(artifact_uri or "")
                if parsed.scheme in ("file", ""):
                    text = (Path(unquote(parsed.path)) / name).read_text()
                else:
                    local = tracker.client.download_artifacts(run_id, name, str(Path(tmp) / run_id))
                    text = Path(local).read_text()
                return json.loads(text)
            except Exception:  # a run killed before it logged the file, or an unreadable artifact
                return None

        yield read
