"""The sweep's cells as Ray tasks on an existing Ray cluster (``suite sweep --ray-address ADDRESS``).

Same semantics as the local pool (runners/sweep.py): a cell that raises, returns a NaN or whose
worker dies ends FAILED with the reason; a cell over its time limit is cancelled (its worker
process killed) and ends FAILED; Ctrl-C or SIGTERM cancels every running cell and ends it KILLED.

Ray workers only compute and return their metrics; this (the driver) process opens, finishes and
ends every MLflow run, as the local sweep does. One writer per sweep means the workers need no
route to the tracking server nor its credentials, parallel cells cannot contend for the store,
and a worker killed by a time limit or a node failure leaves nothing half-logged: the run it
was computing is ended here with the reason. All runs of a sweep thus go to the one tracking
server (``MLFLOW_TRACKING_URI``) the driver points at.

The cluster's nodes must be able to import the suite (the same installation, or a shared
checkout on ``PYTHONPATH``); the driver passes its task-registration and data/cache
environment variables on to the workers.
"""

from __future__ import annotations

import os
import socket
import warnings
from typing import Any

from runners.cell import Cell, CellResult, execute
from runners.outcome import record_result
from runners.pool import Active, CellPool
from suite.errors import UsageError
from suite.tracking import Tracker

# Passed on to every Ray worker, so that it registers the same tasks and finds the same data.
_FORWARDED_ENV = ("SUITE_TASK_MODULES", "SUITE_CACHE", "SUITE_DATA", "PYTHONPATH")


def _run_cell(cell: Cell, threads: int | None) -> CellResult:
    """Body of the Ray task: the cell, computed on a worker."""
    return execute(cell, threads=threads)


def connect(address: str) -> dict[str, float]:
    """Join the Ray cluster at ``address``; returns its resources. A clear error when it cannot."""
    import ray

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"ray\..*")  # Ray's notes on its future defaults
    if ray.is_initialized():
        return ray.cluster_resources()
    probe(address)
    env = {k: os.environ[k] for k in _FORWARDED_ENV if os.environ.get(k)}
    try:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False, logging_level="ERROR",
                 configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(f"cannot join the Ray cluster at {address!r} ({exc}); start one with "
                         "`ray start --head` and pass the address it prints (e.g. 127.0.0.1:6379), or run "
                         "the sweep without --ray-address") from None
    return ray.cluster_resources()


def probe(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT that does not accept connections fails in seconds (Ray itself retries for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and the like: Ray resolves them
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UsageError(f"no Ray cluster answers at {address} ({exc}); start one with `ray start --head` and "
                         "pass the address it prints (e.g. 127.0.0.1:6379), or run the sweep without "
                         "--ray-address") from None


class RayPool(CellPool):
    """Runs cells as Ray tasks, at most ``jobs`` at once (default: the cluster's CPUs), and records them."""

    title = "ray sweep"

    def __init__(self, tracker: Tracker, address: str, jobs: int | None = None) -> None:
        import ray

        resources = connect(address)
        super().__init__(tracker, jobs or max(1, int(resources.get("CPU", 1))))
        self.ray = ray
        # A crashed cell is a FAILED result, never silently retried elsewhere.
        self.remote = ray.remote(num_cpus=1, max_retries=0)(_run_cell)

    def _launch(self, cell: Cell) -> tuple[Any, None]:
        return self.remote.options(name=cell.label()[:100]).remote(cell, cell.threads or 1), None

    def _ready(self, timeout: float) -> list[Any]:
        ready, _ = self.ray.wait(list(self.active), num_returns=1, timeout=timeout)
        return ready

    def _receive(self, item: Active) -> None:
        from ray.exceptions import RayTaskError

        try:
            result = self.ray.get(item.key)
        except RayTaskError as exc:  # the task raised: its exception and traceback, as the local pool reports
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            self._end(item, "FAILED", f"{type(cause).__name__}: {cause}\n{exc}")  # with the remote traceback
            return
        except Exception as exc:  # noqa: BLE001 - the worker or its node died: WorkerCrashedError, ...
            self._end(item, "FAILED", f"ray worker died before sending a result ({type(exc).__name__}: {exc})")
            return
        record_result(self.tracker, item.run_id, item.cell, result)
        self._end(item, "FINISHED", metrics=result.metrics)

    def _stop(self, item: Active) -> None:
        self.ray.cancel(item.key, force=True)  # kills the worker process running it
