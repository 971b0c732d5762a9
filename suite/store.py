"""Where the MLflow store is and whether it can be used, checked without importing MLflow.

:mod:`suite.tracking` (the one module that talks to MLflow) calls these before MLflow touches a
store, so that a missing folder, a read-only file or a tracking server that does not answer is
named with its fix in seconds, and so that concurrent writers of one SQLite file wait for each
other instead of losing a write.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from suite.errors import TrackingError

T = TypeVar("T")

_LOCK_MARKERS = ("database is locked", "database table is locked", "unable to open database file")


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite file ``mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI; None for any other store."""
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0]) if uri.startswith("sqlite:///") else None


def retry(fn: Callable[..., T], *args: Any, attempts: int = 12, **kwargs: Any) -> T:
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
def store_init_lock(db: Path | None) -> Iterator[None]:
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


def check_store(uri: str, *, write: bool) -> None:
    """Refuse a store that cannot be used, naming the fix, before MLflow touches it."""
    db = sqlite_path(uri)
    if db is not None:
        _check_sqlite_store(uri, db, write)
    elif uri.startswith(("http://", "https://")):
        _check_server(uri)


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
