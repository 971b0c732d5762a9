"""All MLflow I/O of the suite lives here; tasks never import mlflow.

The embedded default store is ``sqlite:///mlflow.db`` in the working directory, with
artifacts beside it in ``mlartifacts/``; ``MLFLOW_TRACKING_URI`` points the suite at a
team's tracking server instead. One experiment per task family.

Every write goes through :func:`_retry`, so a SQLite "database is locked" from a
concurrent writer delays a write instead of losing it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from suite.config import TaskConfig, canonical_json
from suite.environment import git_commit
from suite.errors import TrackingError
from suite.examples import ExampleScores
from suite.schema import Metric

import suite

T = TypeVar("T")

TERMINAL = ("FINISHED", "FAILED", "KILLED")
_LOCK_MARKERS = ("database is locked", "database table is locked", "unable to open database file")


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite file ``mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0]) if uri.startswith("sqlite:///") else None


def _quiet_mlflow() -> None:
    for name in ("alembic", "mlflow", "mlflow.store", "mlflow.tracking"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module=r"mlflow\..*")


def _retry(fn: Callable[..., T], *args: Any, attempts: int = 12, **kwargs: Any) -> T:
    """Call ``fn``, retrying with back-off while SQLite reports a lock held by another writer."""
    delay = 0.05
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # mlflow wraps sqlite3.OperationalError in its own exceptions
            if attempt == attempts - 1 or not any(m in str(exc) for m in _LOCK_MARKERS):
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def _process_start(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def run_owner_tags() -> dict[str, str]:
    """Tags that let a later sweep tell a live RUNNING run from one whose process died."""
    pid = os.getpid()
    return {"suite.host": socket.gethostname(), "suite.pid": str(pid), "suite.pid_start": repr(_process_start(pid))}


def owner_alive(tags: Mapping[str, str]) -> bool:
    """Is the process that owns a RUNNING run still alive? Runs of other hosts count as alive."""
    if tags.get("suite.host") != socket.gethostname():
        return True
    try:
        pid = int(tags.get("suite.pid", ""))
    except ValueError:
        return False
    return repr(_process_start(pid)) == tags.get("suite.pid_start")


@contextmanager
def _store_init_lock(db: Path | None) -> Iterator[None]:
    """Serialize the first open of a SQLite store: MLflow creates and migrates its schema then,
    and two processes doing so at once corrupt the migration ("duplicate column name")."""
    if db is None:
        yield
        return
    import fcntl

    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_sqlite_store(uri: str, db: Path, write: bool) -> None:
    """A missing or read-only store folder or file is named, with the fix, before MLflow touches it."""
    if not db.parent.is_dir():
        raise TrackingError(f"MLflow store {uri}: folder {db.parent} does not exist; create it or "
                            "set MLFLOW_TRACKING_URI to a writable location")
    if not write:
        return
    # os.access also reports a read-only file system to root, whom file modes do not stop.
    if not os.access(db.parent, os.W_OK):
        raise TrackingError(f"MLflow store {uri}: folder {db.parent} is read-only (SQLite needs to write the store "
                            "and its lock and journal files beside it); make it writable, or set "
                            "MLFLOW_TRACKING_URI to a writable location. Runs already in the store are untouched.")
    if db.exists() and not os.access(db, os.W_OK):
        raise TrackingError(f"MLflow store {uri}: the file {db} is read-only; make it writable (chmod u+w), or "
                            "set MLFLOW_TRACKING_URI to a writable location. Runs already in it are untouched.")


def _check_server(uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds when the tracking server is down, instead of after minutes of MLflow's HTTP retries."""
    import requests

    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
    except requests.RequestException as exc:
        raise TrackingError(
            f"cannot reach the MLflow tracking server {uri} ({type(exc).__name__}: {exc}); start it "
            "(mlflow server --host HOST --port PORT) or fix MLFLOW_TRACKING_URI (unset it to use ./mlflow.db)"
        ) from None
    if response.status_code != 200:
        raise TrackingError(f"{uri} answered /health with HTTP {response.status_code}: is it an MLflow tracking "
                            "server? Fix MLFLOW_TRACKING_URI (unset it to use ./mlflow.db)")


class Tracker:
    """Opens, finishes and queries the suite's MLflow runs."""

    def __init__(self, uri: str | None = None, *, write: bool = True) -> None:
        """``write=False``: the caller only reads (the leaderboard), so a read-only store is fine."""
        self.uri = uri or tracking_uri()
        _quiet_mlflow()
        from mlflow.tracking import MlflowClient

        db = _sqlite_path(self.uri)
        if db is not None:
            _check_sqlite_store(self.uri, db, write)
        elif self.uri.startswith(("http://", "https://")):
            _check_server(self.uri)
        try:
            with _store_init_lock(db if write else None):  # a reader creates nothing
                self.client = MlflowClient(self.uri)
                _retry(self.client.search_experiments, max_results=1)
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
        found = _retry(self.client.get_experiment_by_name, name)
        if found is not None:
            return found.experiment_id
        location = (self._artifact_root / name).as_uri() if self._artifact_root else None
        try:
            return _retry(self.client.create_experiment, name, artifact_location=location)
        except Exception:
            found = _retry(self.client.get_experiment_by_name, name)  # created concurrently by another process
            if found is None:
                raise
            return found.experiment_id

    # -- run life cycle ---------------------------------------------------------------

    def open_run(self, *, task: str, task_version: str, tier: str, config: TaskConfig, config_hash: str,
                 tags: Mapping[str, str]) -> str:
        """Create a RUNNING run with the contracted tags, the config as params and as JSON."""
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
        run = _retry(self.client.create_run, self.experiment_id(task), run_name=_run_name(values, config_hash),
                     tags=all_tags)
        run_id = run.info.run_id
        params = [Param(k, _param_value(v)) for k, v in sorted(values.items())]
        _retry(self.client.log_batch, run_id, params=params, tags=[RunTag("suite.params", "logged")])
        self.log_json(run_id, "config.json", {"task": task, "tier": tier, "config_hash": config_hash,
                                              "config": values})
        return run_id

    def finish(self, run_id: str, metrics: Mapping[str, float], *, schema: Mapping[str, Metric],
               environment: Mapping[str, Any], summary: Mapping[str, Any],
               history: Sequence[tuple[int, Mapping[str, float]]] = (),
               examples: Sequence[ExampleScores] = ()) -> None:
        """Log metrics, the result schema and the environment, then mark the run FINISHED.

        ``history`` holds (step, metrics) pairs logged as MLflow metric history; the final
        metrics are logged at the last step so that MLflow's "latest value" is the headline one.
        ``examples``: per-example test scores, each logged as ``examples/<axis>.<name>.json``.
        """
        last = 0
        for step, values in history:
            self.log_metrics(run_id, values, step=step)
            last = max(last, step)
        self.log_metrics(run_id, metrics, step=last)
        self.log_json(run_id, "environment.json", environment)
        for scores in examples:
            _retry(self.client.log_text, run_id, json.dumps(scores.to_json(), separators=(",", ":")), scores.artifact)
        self.log_json(run_id, "result.json", {
            **summary,
            "metrics": {k: {"value": v, **schema[k].to_json()} for k, v in sorted(metrics.items())},
        })
        _retry(self.client.set_terminated, run_id, status="FINISHED")

    def end(self, run_id: str, status: str, reason: str) -> None:
        """End a run as FAILED or KILLED, with the reason in the tag ``suite.failure_reason``."""
        if status not in ("FAILED", "KILLED"):
            raise ValueError(f"status must be FAILED or KILLED, not {status!r}")
        _retry(self.client.set_tag, run_id, "suite.failure_reason", reason[-4900:])
        _retry(self.client.set_terminated, run_id, status=status)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric as MlflowMetric

        now = int(time.time() * 1000)
        batch = [MlflowMetric(k, float(v), now, step) for k, v in sorted(metrics.items())]
        for i in range(0, len(batch), 500):
            _retry(self.client.log_batch, run_id, metrics=batch[i:i + 500])

    def log_json(self, run_id: str, name: str, payload: Any) -> None:
        _retry(self.client.log_text, run_id, json.dumps(payload, indent=2, sort_keys=True, default=str), name)

    # -- queries ----------------------------------------------------------------------

    def runs(self, family: str, *, config_hash: str | None = None, status: str | None = None) -> list[Any]:
        """Runs of a family, newest first, optionally of one config hash and status."""
        from mlflow.entities import ViewType

        found = _retry(self.client.get_experiment_by_name, family)
        if found is None:
            return []
        clauses = []
        if config_hash:
            clauses.append(f"tags.`suite.config_hash` = '{config_hash}'")
        if status:
            clauses.append(f"attributes.status = '{status}'")
        out: list[Any] = []
        token = None
        while True:
            page = _retry(self.client.search_runs, [found.experiment_id], filter_string=" and ".join(clauses),
                          run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, order_by=["attributes.start_time DESC"],
                          page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out

    def finished_hashes(self, family: str) -> dict[str, str]:
        """config hash -> run id of its newest FINISHED run."""
        out: dict[str, str] = {}
        for run in self.runs(family, status="FINISHED"):
            out.setdefault(run.data.tags.get("suite.config_hash", ""), run.info.run_id)
        return out

    def reap_stale(self, families: Iterable[str]) -> list[str]:
        """Mark RUNNING runs whose process is gone as KILLED; return their ids."""
        reaped = []
        for family in families:
            for run in self.runs(family, status="RUNNING"):
                if not owner_alive(run.data.tags):
                    self.end(run.info.run_id, "KILLED", "stale: the process that ran it died before it ended")
                    reaped.append(run.info.run_id)
        return reaped


def _param_value(value: Any) -> str:
    return value if isinstance(value, str) else canonical_json(value)


def _run_name(values: Mapping[str, Any], config_hash: str) -> str:
    parts = [str(values.get("method"))]
    if values.get("epsilon") is not None:
        parts.append(f"eps={values['epsilon']:g}")
    parts.append(f"seed={values.get('seed')}")
    return " ".join(parts) + f" [{config_hash[:8]}]"


@functools.cache
def default_tracker() -> Tracker:
    return Tracker()
