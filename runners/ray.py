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
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from runners.cell import Cell, CellResult, execute
from runners.outcome import Outcome, interrupt_name, open_run, record_result, sigterm_as_interrupt
from suite.errors import UsageError
from suite.progress import Display
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


@dataclass
class _Active:
    cell: Cell
    run_id: str
    ref: Any
    started: float


class RayPool:
    """Runs cells as Ray tasks, at most ``jobs`` at once (default: the cluster's CPUs), and records them."""

    def __init__(self, tracker: Tracker, address: str, jobs: int | None = None) -> None:
        import ray

        resources = connect(address)
        self.ray = ray
        self.tracker = tracker
        self.jobs = jobs or max(1, int(resources.get("CPU", 1)))
        # A crashed cell is a FAILED result, never silently retried elsewhere.
        self.remote = ray.remote(num_cpus=1, max_retries=0)(_run_cell)
        self.active: dict[Any, _Active] = {}
        self.outcomes: list[Outcome] = []

    def run(self, cells: Iterable[Cell], cached: int = 0) -> list[Outcome]:
        queue = list(cells)
        started = time.monotonic()
        title = f"ray sweep: {len(queue)} to run" + (f", {cached} cached" if cached else "")
        with Display(len(queue), title) as self.display, sigterm_as_interrupt():
            try:
                while queue or self.active:
                    while queue and len(self.active) < self.jobs:
                        self._start(queue.pop(0))
                    self._poll(timeout=0.5)
            except KeyboardInterrupt as exc:
                self._cancel_all(interrupt_name(exc, since=started))
                raise
        return self.outcomes

    def _start(self, cell: Cell) -> None:
        run_id = open_run(self.tracker, cell)
        ref = self.remote.options(name=cell.label()[:100]).remote(cell, cell.threads or 1)
        self.active[ref] = _Active(cell, run_id, ref, time.monotonic())
        self.display.cell_started(ref, cell.label())

    def _poll(self, timeout: float) -> None:
        ready, _ = self.ray.wait(list(self.active), num_returns=1, timeout=timeout)
        for ref in ready:
            self._receive(self.active[ref])
        now = time.monotonic()
        for item in list(self.active.values()):
            if now - item.started > item.cell.timeout_s:
                self.ray.cancel(item.ref, force=True)  # kills the worker process running it
                self._end(item, "FAILED", f"timeout: killed after {item.cell.timeout_s:g} s")

    def _receive(self, item: _Active) -> None:
        from ray.exceptions import RayTaskError

        try:
            result = self.ray.get(item.ref)
        except RayTaskError as exc:  # the task raised: its exception and traceback, as the local pool reports
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            self._end(item, "FAILED", f"{type(cause).__name__}: {cause}\n{exc}")  # with the remote traceback
            return
        except Exception as exc:  # noqa: BLE001 - the worker or its node died: WorkerCrashedError, ...
            self._end(item, "FAILED", f"ray worker died before sending a result ({type(exc).__name__}: {exc})")
            return
        record_result(self.tracker, item.run_id, item.cell, result)
        self._end(item, "FINISHED", metrics=result.metrics)

    def _end(self, item: _Active, status: str, reason: str = "", metrics: dict[str, float] | None = None) -> None:
        from runners.sweep import describe

        if status != "FINISHED":
            self.tracker.end(item.run_id, status, reason)
        del self.active[item.ref]
        outcome = Outcome(item.cell, status, item.run_id, metrics or {}, reason, time.monotonic() - item.started)
        self.outcomes.append(outcome)
        self.display.cell_ended(item.ref, describe(outcome))

    def _cancel_all(self, signame: str) -> None:
        for item in list(self.active.values()):
            self.ray.cancel(item.ref, force=True)
            self._end(item, "KILLED", f"interrupted by {signame}")
