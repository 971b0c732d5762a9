"""The sweep runner: a grid of cells, each in its own worker process, with a cache.

* Every cell is identified by its config hash; a hash that already has a FINISHED run is
  skipped (``--force`` reruns it), a FAILED one is run again.
* RUNNING runs whose process died (a killed earlier sweep) are first marked KILLED.
* Each cell runs in a worker process forked from a server that imported the heavy
  libraries once, with a time limit: a hung cell is killed and recorded FAILED, and the
  sweep goes on.
* ``jobs`` cells run at once. Workers only compute; this process does every MLflow write.
* ``ray_address``: the same, with the cells as tasks on a Ray cluster (runners/ray.py).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Iterable, Mapping, Sequence

from rich.markup import escape
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from runners import worker
from runners.cell import Cell
from runners.outcome import Interrupted, Outcome, open_run, record_result, sigterm_as_interrupt
from runners.references import link_slowdowns
from suite.config import build_config, expand_grid
from suite.errors import ConfigError
from suite.progress import Display
from suite.task import Task
from suite.tracking import Tracker, owner_alive


def plan(tasks: Sequence[type[Task]], tier: str, overrides: Mapping[str, Any] | None = None,
         timeout_s: float | None = None) -> list[Cell]:
    """Every distinct cell of the tasks' tier grids, validated before anything runs."""
    cells: dict[str, Cell] = {}
    for task in tasks:
        spec = task.tier(tier)
        for point in expand_grid(spec.grid):
            try:
                config = build_config(task.Config, {**spec.defaults, **point, **(overrides or {})})
            except ConfigError as exc:
                raise ConfigError(f"{task.name} {tier} grid cell {point}: {exc}") from None
            cell = Cell.make(task, tier, config, timeout_s)
            cells.setdefault(cell.hash, cell)
    return list(cells.values())


@dataclass
class _Active:
    cell: Cell
    run_id: str
    process: Any
    conn: Connection
    started: float


def run_sweep(cells: Iterable[Cell], *, tracker: Tracker, jobs: int | None = 1, force: bool = False,
              preload: Iterable[str] = (), ray_address: str | None = None) -> list[Outcome]:
    """Run the cells that lack a FINISHED run; return an outcome for every cell.

    With ``ray_address`` the cells run as tasks on that Ray cluster (runners/ray.py), at most
    ``jobs`` at once (None: one per CPU of the cluster), else in local worker processes.
    """
    cells = list(cells)
    families = sorted({c.task for c in cells})
    tracker.reap_stale(families)
    done = {family: tracker.finished_hashes(family) for family in families}
    busy = {run.data.tags.get("suite.config_hash") for family in families
            for run in tracker.runs(family, status="RUNNING") if owner_alive(run.data.tags)}
    outcomes: list[Outcome] = []
    pending: list[Cell] = []
    for cell in cells:
        if not force and cell.hash in done[cell.task]:
            outcomes.append(Outcome(cell, "CACHED", done[cell.task][cell.hash]))
        elif cell.hash in busy:
            outcomes.append(Outcome(cell, "BUSY", reason="another live process is running this cell"))
        else:
            pending.append(cell)
    if pending and ray_address:
        from runners.ray import RayPool

        outcomes.extend(RayPool(tracker, ray_address, jobs).run(pending, cached=len(cells) - len(pending)))
    elif pending:
        outcomes.extend(_Pool(tracker, jobs or 1, preload).run(pending, cached=len(cells) - len(pending)))
    for family in families:
        link_slowdowns(tracker, family)
    return outcomes


class _Pool:
    """Runs cells in forkserver workers, ``jobs`` at a time, and records them."""

    def __init__(self, tracker: Tracker, jobs: int, preload: Iterable[str]) -> None:
        if jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {jobs}")
        self.tracker = tracker
        self.jobs = jobs
        self.threads = max(1, (os.cpu_count() or 1) // jobs)
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(["runners.worker", *preload])
        self.active: dict[Connection, _Active] = {}
        self.outcomes: list[Outcome] = []

    def run(self, cells: list[Cell], cached: int = 0) -> list[Outcome]:
        queue = list(cells)
        title = f"sweep: {len(cells)} to run" + (f", {cached} cached" if cached else "")
        with Display(len(cells), title) as self.display, sigterm_as_interrupt():
            try:
                while queue or self.active:
                    while queue and len(self.active) < self.jobs:
                        self._start(queue.pop(0))
                    self._poll(timeout=0.5)
            except KeyboardInterrupt as exc:
                self._kill_all(exc.signame if isinstance(exc, Interrupted) else "SIGINT")
                raise
        return self.outcomes

    def _start(self, cell: Cell) -> None:
        run_id = open_run(self.tracker, cell)
        parent, child = self.ctx.Pipe(duplex=False)
        threads = cell.threads or self.threads
        process = self.ctx.Process(target=worker.main, args=(cell, threads, child), daemon=True)
        process.start()
        child.close()
        self.active[parent] = _Active(cell, run_id, process, parent, time.monotonic())
        self.display.cell_started(parent, cell.label())

    def _poll(self, timeout: float) -> None:
        for conn in wait(list(self.active), timeout=timeout):
            self._receive(self.active[conn])
        now = time.monotonic()
        for item in list(self.active.values()):
            if now - item.started > item.cell.timeout_s:
                item.process.kill()
                self._end(item, "FAILED", f"timeout: killed after {item.cell.timeout_s:g} s")

    def _receive(self, item: _Active) -> None:
        try:
            while item.conn.poll():
                message = item.conn.recv()
                kind = message[0]
                if kind == "progress":
                    self.display.cell_progress(item.conn, *message[1:])
                elif kind == "result":
                    record_result(self.tracker, item.run_id, item.cell, message[1])
                    self._end(item, "FINISHED", metrics=message[1].metrics)
                    return
                elif kind == "error":
                    self._end(item, "FAILED", message[1])
                    return
        except (EOFError, OSError):
            item.process.join(5)
            code = item.process.exitcode
            self._end(item, "FAILED", f"worker process died (exit code {code}) before sending a result")

    def _end(self, item: _Active, status: str, reason: str = "", metrics: dict[str, float] | None = None) -> None:
        if status != "FINISHED":
            self.tracker.end(item.run_id, status, reason)
        item.conn.close()
        item.process.join(10)
        del self.active[item.conn]
        wall = time.monotonic() - item.started
        outcome = Outcome(item.cell, status, item.run_id, metrics or {}, reason, wall)
        self.outcomes.append(outcome)
        self.display.cell_ended(item.conn, describe(outcome))

    def _kill_all(self, signame: str) -> None:
        for item in list(self.active.values()):
            item.process.kill()
            self._end(item, "KILLED", f"interrupted by {signame}")


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
