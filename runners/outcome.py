"""Outcomes of cells and the bookkeeping both runners share."""

from __future__ import annotations

import signal
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from typing import Any

from runners.cell import Cell, CellResult
from suite.config import config_hash
from suite.environment import git_commit
from suite.task import Task, get_task
from suite.tracking import Tracker

import suite


@dataclass
class Outcome:
    """How one cell ended: FINISHED, FAILED, KILLED, or CACHED (a FINISHED run already existed)."""

    cell: Cell
    status: str
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("FINISHED", "CACHED")


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so runs end as KILLED like on Ctrl-C."""

    def __init__(self, signame: str = "SIGINT") -> None:
        super().__init__(signame)
        self.signame = signame


_SIGTERMS_RECEIVED: list[float] = []  # when SIGTERM arrived, for interrupt_name


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Interrupted` for the duration of the block."""

    def handler(signum: int, frame: object) -> None:
        _SIGTERMS_RECEIVED.append(time.monotonic())
        raise Interrupted("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupt_name(exc: KeyboardInterrupt, since: float) -> str:
    """The signal behind ``exc``. Ray's client, interrupted inside ``ray.wait``, raises a fresh
    KeyboardInterrupt of its own, so a SIGTERM received since ``since`` is looked up too."""
    if isinstance(exc, Interrupted):
        return exc.signame
    return "SIGTERM" if any(t >= since for t in _SIGTERMS_RECEIVED) else "SIGINT"


def open_run(tracker: Tracker, cell: Cell, start_time: int | None = None) -> str:
    task = get_task(cell.task)
    config = task.parse(cell.config)
    tags = task().tags(config)
    reference = task().reference(config)
    if reference is not None:
        tags["suite.reference_hash"] = config_hash(task.name, task.version, reference)
    return tracker.open_run(task=cell.task, task_version=task.version, tier=cell.tier, config=config,
                            config_hash=cell.hash, tags=tags, start_time=start_time)


def record_result(tracker: Tracker, run_id: str, cell: Cell, result: CellResult) -> None:
    task = get_task(cell.task)
    tracker.finish(run_id, result.metrics, schema=task.result_schema(result.phases),
                   environment=result.environment, summary=result_summary(task, cell, result), history=result.history,
                   examples=result.examples)


def result_summary(task: type[Task], cell: Cell, result: CellResult) -> dict[str, Any]:
    """What ``result.json`` says besides the metric values: all the leaderboard needs to render the run
    without importing its task (its full declared schema, Pareto pairs and privacy unit included).

    Adding a field for the board is one line here.
    """
    config = task.parse(cell.config)
    return {
        "task": cell.task,
        "task_version": task.version,
        "tier": cell.tier,
        "config": cell.config,
        "config_hash": cell.hash,
        "git_commit": git_commit(),
        "suite_version": suite.__version__,
        "description": task.description,
        "privacy_unit": task().privacy_unit(config),
        "pareto": [list(pair) for pair in task.pareto],
        "curves": [curve.to_json() for curve in task.curves],
        "notes": list(task.notes),
        "schema": {key: metric.to_json() for key, metric in sorted(task.result_schema(result.phases).items())},
    }


def failure_reason(exc: BaseException) -> str:
    """The exception and the last frames of its traceback, short enough for a tag."""
    tb = "".join(traceback.format_exception(exc, limit=-3))
    return f"{type(exc).__name__}: {exc}\n{tb}"
