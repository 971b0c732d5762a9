"""All MLflow I/O of the suite lives here: no other module imports mlflow.

The embedded default store is ``sqlite:///mlflow.db`` in the working directory, with
artifacts beside it in ``mlartifacts/``; ``MLFLOW_TRACKING_URI`` points the suite at a
team's tracking server instead. One experiment per task family.

Writers open, finish and end runs; readers get the suite's own types, never MLflow's:
:class:`RunRecord` per run (:meth:`Tracker.runs`), a pandas frame of every run for the
leaderboard (:meth:`Tracker.frame`), and an artifact's text or JSON (:meth:`Tracker.read_json`).
Every call goes through :func:`suite.store.retry`, so a SQLite "database is locked" from a
concurrent writer delays a write instead of losing it.

>>> tracker = Tracker()                                       # doctest: +SKIP
>>> [run.status for run in tracker.runs("dpsgd")]             # doctest: +SKIP
['FINISHED', 'FAILED']
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from suite.config import BaseConfig, canonical_json
from suite.environment import git_commit
from suite.errors import TrackingError
from suite.examples import ExampleScores
from suite.schema import Metric
from suite.store import check_store, owner_alive, retry, run_owner_tags, sqlite_path, store_init_lock, tracking_uri

import suite

if TYPE_CHECKING:
    import pandas as pd

TERMINAL = ("FINISHED", "FAILED", "KILLED")
__all__ = ["TERMINAL", "RunRecord", "Tracker", "tracking_uri"]


@dataclass(frozen=True)
class RunRecord:
    """One run of the store, as the suite reads it (no MLflow types leave this module)."""

    run_id: str
    experiment_id: str
    status: str  # RUNNING, FINISHED, FAILED or KILLED
    start_time: int | None  # milliseconds since the epoch
    end_time: int | None
    artifact_uri: str
    tags: Mapping[str, str]
    params: Mapping[str, str]  # the resolved config, one param per key
    metrics: Mapping[str, float]  # the latest value of each metric


def _record(run: Any) -> RunRecord:
    info, data = run.info, run.data
    return RunRecord(info.run_id, info.experiment_id, info.status, info.start_time, info.end_time,
                     info.artifact_uri or "", dict(data.tags), dict(data.params), dict(data.metrics))


def _quiet_mlflow() -> None:
    for name in ("alembic", "mlflow", "mlflow.store", "mlflow.tracking"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module=r"mlflow\..*")


def _create_sqlite_store(db: Path) -> None:
    """Make a new SQLite store under a temporary name and rename it into place once MLflow has
    created and migrated its schema: a process killed mid-migration leaves a temporary file, never
    a half-migrated store that no later open can migrate ("table spans already exists").

    Called under :func:`suite.store.store_init_lock`, so no other process creates it meanwhile.
    """
    import os

    from mlflow.tracking import MlflowClient

    for stale in db.parent.glob(f".{db.name}.*.creating"):  # left by a process killed while creating
        stale.unlink(missing_ok=True)
    tmp = db.with_name(f".{db.name}.{os.getpid()}.creating")
    retry(MlflowClient(f"sqlite:///{tmp}").search_experiments, max_results=1)
    os.replace(tmp, db)


class Tracker:
    """Opens, finishes and queries the suite's MLflow runs."""

    def __init__(self, uri: str | None = None, *, write: bool = True) -> None:
        """``write=False``: the caller only reads (the leaderboard), so a read-only store is fine."""
        self.uri = uri or tracking_uri()
        _quiet_mlflow()
        from mlflow.tracking import MlflowClient

        check_store(self.uri, write=write)
        db = sqlite_path(self.uri)
        try:
            with store_init_lock(db if write else None):  # a reader creates nothing
                if write and db is not None and not db.exists():
                    _create_sqlite_store(db)
                self.client = MlflowClient(self.uri)
                retry(self.client.search_experiments, max_results=1)
        except Exception as exc:
            raise TrackingError(
                f"cannot use the MLflow store {self.uri}: {exc}\n"
                "Check MLFLOW_TRACKING_URI (unset it to use ./mlflow.db) and that the store is reachable and writable."
            ) from exc
        self._artifact_root = db.parent / "mlartifacts" if db is not None else None
        self._experiments: dict[str, str] = {}

    # -- experiments ------------------------------------------------------------------

    def experiment_id(self, family: str) -> str:
        if family not in self._experiments:
            self._experiments[family] = self._get_or_create_experiment(family)
        return self._experiments[family]

    def _get_or_create_experiment(self, name: str) -> str:
        found = retry(self.client.get_experiment_by_name, name)
        if found is not None:
            return found.experiment_id
        location = (self._artifact_root / name).as_uri() if self._artifact_root else None
        try:
            return retry(self.client.create_experiment, name, artifact_location=location)
        except Exception:
            found = retry(self.client.get_experiment_by_name, name)  # created concurrently by another process
            if found is None:
                raise
            return found.experiment_id

    # -- run life cycle ---------------------------------------------------------------

    def open_run(self, *, task: str, task_version: str, tier: str, config: BaseConfig, config_hash: str,
                 tags: Mapping[str, str], start_time: int | None = None) -> str:
        """Create a RUNNING run with the contracted tags, the config as params and as JSON.

        ``start_time`` (ms since the epoch; default now): when the run's computation started, if
        that was before this call (a pool launches a cell's worker, then opens its run).
        """
        from mlflow.entities import Param, RunTag

        values = config.model_dump(mode="json")
        all_tags = {
            "suite.task": task,
            "suite.task_version": task_version,
            "suite.method": str(values.get("method")),
            "suite.tier": tier,
            "suite.seed": str(values.get("seed")),
            "suite.config_hash": config_hash,
            "suite.git_commit": git_commit(),
            "suite.version": suite.__version__,
            **run_owner_tags(),
            **tags,
        }
        run = retry(self.client.create_run, self.experiment_id(task), run_name=_run_name(values, config_hash),
                    tags=all_tags, start_time=start_time)
        run_id = run.info.run_id
        params = [Param(k, _param_value(v)) for k, v in sorted(values.items())]
        retry(self.client.log_batch, run_id, params=params, tags=[RunTag("suite.params", "logged")])
        self.log_json(run_id, "config.json", {"task": task, "tier": tier, "config_hash": config_hash,
                                              "config": values})
        return run_id

    def finish(self, run_id: str, metrics: Mapping[str, float], *, schema: Mapping[str, Metric],
               environment: Mapping[str, Any], summary: Mapping[str, Any],
               history: Sequence[tuple[int, Mapping[str, float]]] = (),
               examples: Sequence[ExampleScores] = ()) -> None:
        """Log metrics, the result summary and the environment, then mark the run FINISHED.

        ``result.json`` is ``summary`` plus each logged metric's value with its declared direction,
        unit and description. ``history`` holds (step, metrics) pairs logged as MLflow metric
        history; the final metrics are logged at the last step so that MLflow's "latest value" is
        the headline one. ``examples``: per-example test scores, each logged as
        ``examples/<axis>.<name>.json``.
        """
        last = max((step for step, _ in history), default=0)
        entries = [(step, key, value, 0) for step, values in history for key, value in values.items()]
        # The final values a millisecond later than the history: MLflow's latest value (the headline)
        # is the one of the highest step, then the latest timestamp.
        entries += [(last, key, value, 1) for key, value in sorted(metrics.items())]
        self.log_metrics_at(run_id, entries)
        self.log_json(run_id, "environment.json", environment)
        for scores in examples:
            retry(self.client.log_text, run_id, json.dumps(scores.to_json(), separators=(",", ":")), scores.artifact)
        self.log_json(run_id, "result.json", {
            **summary,
            "metrics": {k: {"value": v, **schema[k].to_json()} for k, v in sorted(metrics.items())},
        })
        retry(self.client.set_terminated, run_id, status="FINISHED")

    def end(self, run_id: str, status: str, reason: str) -> None:
        """End a run as FAILED or KILLED, with the reason in the tag ``suite.failure_reason``."""
        if status not in ("FAILED", "KILLED"):
            raise ValueError(f"status must be FAILED or KILLED, not {status!r}")
        retry(self.client.set_tag, run_id, "suite.failure_reason", reason[-4900:])
        retry(self.client.set_terminated, run_id, status=status)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        self.log_metrics_at(run_id, [(step, k, v, 0) for k, v in sorted(metrics.items())])

    def log_metrics_at(self, run_id: str, entries: Sequence[tuple[int, str, float, int]]) -> None:
        """Log (step, key, value, ms after now) entries, in as few write transactions as MLflow's
        batch limit allows."""
        from mlflow.entities import Metric as MlflowMetric

        now = int(time.time() * 1000)
        batch = [MlflowMetric(key, float(value), now + later, step) for step, key, value, later in entries]
        for i in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics per batch
            retry(self.client.log_batch, run_id, metrics=batch[i:i + 1000])

    def log_json(self, run_id: str, name: str, payload: Any) -> None:
        retry(self.client.log_text, run_id, json.dumps(payload, indent=2, sort_keys=True, default=str), name)

    # -- reads ------------------------------------------------------------------------

    def runs(self, family: str, *, config_hash: str | None = None, status: str | None = None) -> list[RunRecord]:
        """Runs of a family, newest first, optionally of one config hash and status."""
        found = retry(self.client.get_experiment_by_name, family)
        if found is None:
            return []
        clauses = []
        if config_hash:
            clauses.append(f"tags.`suite.config_hash` = '{config_hash}'")
        if status:
            clauses.append(f"attributes.status = '{status}'")
        return [_record(run) for run in self._search([found.experiment_id], " and ".join(clauses))]

    def run(self, run_id: str) -> RunRecord:
        """One run by its id."""
        return _record(retry(self.client.get_run, run_id))

    def frame(self) -> pd.DataFrame:
        """Every run of every experiment as a pandas row (what ``mlflow.search_runs`` gives).

        Columns ``run_id, experiment_id, status, artifact_uri, start_time, end_time`` (UTC
        timestamps), then ``metrics.<key>`` (NaN where absent), ``params.<key>`` and ``tags.<key>``
        (None where absent). An empty frame when the store holds no run.
        """
        import pandas as pd

        experiments = [e.experiment_id for e in retry(self.client.search_experiments)]
        rows = [_row(run) for run in self._search(experiments, "")] if experiments else []
        if not rows:
            return pd.DataFrame()
        frame = pd.DataFrame(rows)
        for column in ("start_time", "end_time"):
            frame[column] = pd.to_datetime(frame[column], unit="ms", utc=True)
        return frame

    def read_text(self, run_id: str, name: str, *, artifact_uri: str | None = None) -> str | None:
        """The artifact ``name`` of a run as text; None when the run has no such (readable) artifact.

        Local artifact stores (``file://``) are read in place; any other store is downloaded into
        a temporary folder first. Give ``artifact_uri`` (a :class:`RunRecord`'s) to save a lookup.
        """
        try:
            uri = artifact_uri if artifact_uri is not None else self.run(run_id).artifact_uri
            parsed = urlparse(uri or "")
            if parsed.scheme in ("file", ""):
                return (Path(unquote(parsed.path)) / name).read_text()
            with tempfile.TemporaryDirectory(prefix="suite-artifact-") as tmp:
                return Path(retry(self.client.download_artifacts, run_id, name, tmp)).read_text()
        except Exception:  # a run killed before it logged the file, or an unreadable artifact
            return None

    def read_json(self, run_id: str, name: str, *, artifact_uri: str | None = None) -> Any | None:
        """The artifact ``name`` parsed as JSON; None when it is missing or does not parse."""
        text = self.read_text(run_id, name, artifact_uri=artifact_uri)
        try:
            return None if text is None else json.loads(text)
        except ValueError:
            return None

    def finished_hashes(self, family: str) -> dict[str, str]:
        """config hash -> run id of its newest FINISHED run."""
        out: dict[str, str] = {}
        for run in self.runs(family, status="FINISHED"):
            out.setdefault(run.tags.get("suite.config_hash", ""), run.run_id)
        return out

    def busy_hashes(self, families: Iterable[str]) -> set[str]:
        """Config hashes that a live process is running now (RUNNING runs whose owner is alive)."""
        return {run.tags.get("suite.config_hash", "") for family in families
                for run in self.runs(family, status="RUNNING") if owner_alive(run.tags)}

    def reap_stale(self, families: Iterable[str]) -> list[str]:
        """Mark RUNNING runs whose process is gone as KILLED; return their ids."""
        reaped = []
        for family in families:
            for run in self.runs(family, status="RUNNING"):
                if not owner_alive(run.tags):
                    self.end(run.run_id, "KILLED", "stale: the process that ran it died before it ended")
                    reaped.append(run.run_id)
        return reaped

    def _search(self, experiment_ids: list[str], filter_string: str) -> list[Any]:
        """MLflow runs (active, not deleted) of the experiments, newest first, every page."""
        from mlflow.entities import ViewType

        out: list[Any] = []
        token = None
        while True:
            page = retry(self.client.search_runs, experiment_ids, filter_string=filter_string,
                         run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                         order_by=["attributes.start_time DESC"], page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out


def _row(run: Any) -> dict[str, Any]:
    info, data = run.info, run.data
    row: dict[str, Any] = {"run_id": info.run_id, "experiment_id": info.experiment_id, "status": info.status,
                           "artifact_uri": info.artifact_uri, "start_time": info.start_time,
                           "end_time": info.end_time}
    row.update({f"metrics.{k}": v for k, v in data.metrics.items()})
    row.update({f"params.{k}": v for k, v in data.params.items()})
    row.update({f"tags.{k}": v for k, v in data.tags.items()})
    return row


def _param_value(value: Any) -> str:
    return value if isinstance(value, str) else canonical_json(value)


def _run_name(values: Mapping[str, Any], config_hash: str) -> str:
    parts = [str(values.get("method"))]
    if values.get("epsilon") is not None:
        parts.append(f"eps={values['epsilon']:g}")
    parts.append(f"seed={values.get('seed')}")
    return " ".join(parts) + f" [{config_hash[:8]}]"
