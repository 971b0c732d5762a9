"""The one run lifecycle: which cells run (:func:`run_cells`), and the pools that run them.

:func:`run_cells` first marks RUNNING runs whose process died as KILLED, skips cells with a FINISHED
run (unless forced) and cells a live process is running now (BUSY), hands the rest to a pool,
longest first (runners/schedule.py), and links slowdowns to reference runs. A pool runs at most
``jobs`` cells at once, each with its time limit; it opens a cell's MLflow run before the cell
starts and ends it when the cell does: FINISHED with its metrics, FAILED with the reason (an
exception, a NaN, a dead worker, a time limit), or KILLED when Ctrl-C or SIGTERM stops it. Only the
way a cell is launched, waited on and stopped differs between pools (in this process in
runners/local.py, forkserver processes in runners/sweep.py, Ray tasks in runners/ray.py); those are
the hooks below.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from rich.markup import escape

from runners.cell import Cell
from runners.outcome import Outcome, interrupt_name, open_run, sigterm_as_interrupt
from runners.references import link_slowdowns
from runners.schedule import longest_first
from suite.progress import Display
from suite.tracking import Tracker


def run_cells(cells: Iterable[Cell], *, tracker: Tracker, pool: Callable[[], CellPool],
              force: bool = False) -> list[Outcome]:
    """Run the cells that lack a FINISHED run in a pool made by ``pool()``; an outcome for every cell."""
    cells = list(cells)
    families = sorted({c.task for c in cells})
    tracker.reap_stale(families)
    done = {family: tracker.finished_hashes(family) for family in families}
    busy = tracker.busy_hashes(families)
    outcomes: list[Outcome] = []
    pending: list[Cell] = []
    for cell in cells:
        if not force and cell.hash in done[cell.task]:
            outcomes.append(Outcome(cell, "CACHED", done[cell.task][cell.hash]))
        elif cell.hash in busy:
            outcomes.append(Outcome(cell, "BUSY", reason="another live process is running this cell"))
        else:
            pending.append(cell)
    if pending:
        outcomes.extend(pool().run(longest_first(pending, tracker), cached=len(cells) - len(pending)))
    for family in families:
        link_slowdowns(tracker, family)
    return outcomes


@dataclass
class Active:
    """A running cell: ``key`` is what the pool waits on (a pipe, a Ray object ref)."""

    cell: Cell
    run_id: str
    key: Hashable
    handle: Any  # the worker process (local pool); the pool's own use
    started: float


class CellPool(ABC):
    """The scheduling loop; subclasses launch, wait on and stop cells."""

    title = "sweep"

    def __init__(self, tracker: Tracker, jobs: int) -> None:
        self.tracker = tracker
        self.jobs = jobs
        self.active: dict[Hashable, Active] = {}
        self.outcomes: list[Outcome] = []

    def run(self, cells: Iterable[Cell], cached: int = 0) -> list[Outcome]:
        queue = list(cells)
        started = time.monotonic()
        title = f"{self.title}: {len(queue)} to run" + (f", {cached} cached" if cached else "")
        with Display(len(queue), title) as self.display, sigterm_as_interrupt():
            try:
                while queue or self.active:
                    while queue and len(self.active) < self.jobs:
                        self._start(queue.pop(0))
                    self._poll(timeout=0.5)
            except KeyboardInterrupt as exc:
                signame = interrupt_name(exc, since=started)
                for item in list(self.active.values()):
                    self._stop(item)
                    self._end(item, "KILLED", f"interrupted by {signame}")
                raise
        return self.outcomes

    def _start(self, cell: Cell) -> None:
        started, started_ms = time.monotonic(), int(time.time() * 1000)
        key, handle = self._launch(cell)  # the cell starts while its run is opened: the run's wall counts from here
        item = Active(cell, "", key, handle, started)
        try:
            item.run_id = open_run(self.tracker, cell, start_time=started_ms)
        except BaseException:
            self._stop(item)
            self._release(item)
            raise
        self.active[key] = item
        self.display.cell_started(key, cell.label())

    def _poll(self, timeout: float) -> None:
        for key in self._ready(timeout):
            self._receive(self.active[key])
        now = time.monotonic()
        for item in list(self.active.values()):
            if now - item.started > item.cell.timeout_s:
                self._stop(item)
                self._end(item, "FAILED", f"timeout: killed after {item.cell.timeout_s:g} s")

    def _end(self, item: Active, status: str, reason: str = "", metrics: dict[str, float] | None = None) -> None:
        if status != "FINISHED":
            self.tracker.end(item.run_id, status, reason)
        self._release(item)
        del self.active[item.key]
        outcome = Outcome(item.cell, status, item.run_id, metrics or {}, reason, time.monotonic() - item.started)
        self.outcomes.append(outcome)
        self.display.cell_ended(item.key, describe(outcome))

    # -- the hooks -------------------------------------------------------------------------
    @abstractmethod
    def _launch(self, cell: Cell) -> tuple[Hashable, Any]:
        """Start computing ``cell``; returns (the key to wait on, a handle for the pool's own use)."""

    @abstractmethod
    def _ready(self, timeout: float) -> list[Hashable]:
        """Keys of active cells with something to receive, waiting at most ``timeout`` seconds."""

    @abstractmethod
    def _receive(self, item: Active) -> None:
        """Read what the cell sent; end it (``self._end``) when it is done."""

    @abstractmethod
    def _stop(self, item: Active) -> None:
        """Kill the cell's computation now (time limit, interrupt)."""

    def _release(self, item: Active) -> None:
        """Free what the ended cell held (pipes, processes)."""


_HEADLINE = ("utility/accuracy", "privacy/epsilon")


def describe(outcome: Outcome) -> str:
    """One line per ended cell, for the log above the progress bars."""
    mark = {"FINISHED": "[green]done[/]", "FAILED": "[red]FAILED[/]", "KILLED": "[yellow]KILLED[/]"}.get(
        outcome.status, outcome.status)
    shown = " ".join(f"{k.split('/')[1]}={outcome.metrics[k]:.4g}" for k in _HEADLINE if k in outcome.metrics)
    line = f"{mark} {escape(outcome.cell.label())} {shown} ({outcome.wall_s:.1f} s)"
    if outcome.reason:
        line += f"\n    {escape(outcome.reason.splitlines()[0])}"
    return line
