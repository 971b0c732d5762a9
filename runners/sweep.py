"""The sweep runner: a grid of cells, each in its own worker process, with a cache.

* Every cell is identified by its config hash; a hash that already has a FINISHED run is
  skipped (``--force`` reruns it), a FAILED one is run again.
* RUNNING runs whose process died (a killed earlier sweep) are first marked KILLED.
* Each cell runs in a worker process forked from a server that imported the heavy
  libraries once (the next cell's worker is forked while the running cells compute), with a
  time limit: a hung cell is killed and recorded FAILED, and the sweep goes on.
* ``jobs`` cells run at once. Workers only compute; this process does every MLflow write.
* Cells start longest first (runners/schedule.py), so no long cell starts last and leaves the
  other workers idle at the end.
* Cells that start a Ray runtime (Flower's Simulation Engine) join a head their worker slot
  keeps for the whole sweep (runners/rayhead.py) instead of starting their own.
* ``ray_address``: the same, with the cells as tasks on a Ray cluster (runners/ray.py).

What is skipped, reaped and linked afterwards is the one lifecycle of :func:`runners.pool.run_cells`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from rich.markup import escape

from runners import worker
from runners.cell import Cell
from runners.outcome import Outcome, record_result
from runners.pool import Active, CellPool, run_cells
from runners.rayhead import RayHeads
from suite.errors import ConfigError
from suite.registry import unknown_name_message
from suite.resolve import grid
from suite.task import Task, get_task
from suite.tracking import Tracker


def plan(tasks: Sequence[type[Task]], tier: str, overrides: Mapping[str, Any] | None = None,
         timeout_s: float | None = None) -> list[Cell]:
    """Every distinct cell of the tasks' tier grids, validated before anything runs.

    ``overrides`` (``suite sweep --set``) apply to the cells whose config has the key; a key that
    no cell's config has is an error.
    """
    cells: dict[str, Cell] = {}
    used: set[str] = set()
    for task in tasks:
        configs, took = grid(task, tier, overrides)
        used |= took
        for config in configs:
            cell = Cell.make(task, tier, config, timeout_s)
            cells.setdefault(cell.hash, cell)
    _check_used(tasks, overrides or {}, used)
    return list(cells.values())


def _check_used(tasks: Sequence[type[Task]], overrides: Mapping[str, Any], used: set[str]) -> None:
    """A ``--set`` key that no cell took is a mistake: name the methods that have it, or the close keys."""
    unused = sorted(set(overrides) - used)
    if not unused:
        return
    key = unused[0]
    holders = [f"{t.name} {m}" for t in tasks for m in t.methods() if key in t.config_model(m).model_fields]
    if holders:
        raise ConfigError(f"--set {key}: no cell of this sweep has the key {key!r} (methods that have it: "
                          f"{', '.join(holders)}; add one of their cells to the grid, or drop the key)")
    keys = sorted({k for t in tasks for m in t.methods() for k in t.config_model(m).model_fields})
    raise ConfigError(f"--set {key}: " + unknown_name_message("key", key, keys).replace("known keys", "keys of the cells"))


def warm_up(preload: Iterable[str]) -> None:
    """Start the local workers' fork server now, so that its imports (every family's heavy modules:
    about 9 s on one core) run beside what the caller does next rather than before the first cell."""
    from multiprocessing import forkserver

    mp.get_context("forkserver").set_forkserver_preload(["runners.worker", *preload])
    forkserver.ensure_running()


def run_sweep(cells: Iterable[Cell], *, tracker: Tracker, jobs: int | None = 1, force: bool = False,
              preload: Iterable[str] = (), ray_address: str | None = None) -> list[Outcome]:
    """Run the cells that lack a FINISHED run; return an outcome for every cell.

    With ``ray_address`` the cells run as tasks on that Ray cluster (runners/ray.py), at most
    ``jobs`` at once (None: one per CPU of the cluster), else in local worker processes.
    """
    if ray_address:
        from runners.ray import RayPool

        return run_cells(cells, tracker=tracker, force=force, pool=lambda: RayPool(tracker, ray_address, jobs))
    return run_cells(cells, tracker=tracker, force=force, pool=lambda: _Pool(tracker, jobs or 1, preload))


class _Pool(CellPool):
    """Runs cells in forkserver workers, ``jobs`` at a time, and records them."""

    def __init__(self, tracker: Tracker, jobs: int, preload: Iterable[str]) -> None:
        if jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {jobs}")
        super().__init__(tracker, jobs)
        self.threads = max(1, (os.cpu_count() or 1) // jobs)
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(["runners.worker", *preload])
        self.ray_heads = RayHeads()
        self.ray_left = 0  # cells not yet launched that run on a Ray head
        self.ray_active: set[Connection] = set()  # running cells that run on one
        self.awaiting: dict[Connection, tuple[int, int]] = {}  # cells waiting for their head: (slot, CPUs)
        self.closing: threading.Thread | None = None  # closes the heads once no cell needs them
        self.slots: dict[Connection, int] = {}  # worker slot of each active cell
        self.exiting: list[Any] = []  # worker processes that sent their result and are exiting
        self.spare: tuple[Connection, Any] | None = None  # a worker started ahead, waiting for a cell
        self.unlaunched = 0  # cells of this sweep not yet launched

    def run(self, cells: Iterable[Cell], cached: int = 0) -> list[Outcome]:
        cells = list(cells)
        needs = [cpus for cpus in map(_ray_cpus, cells) if cpus]
        self.ray_left = len(needs)
        for cpus in sorted(set(needs)):  # start while the first cells run
            for slot in range(min(self.jobs, len(cells))):
                self.ray_heads.prepare(slot, cpus)
        self.unlaunched = len(cells)
        try:
            return super().run(cells, cached)
        finally:
            if self.spare:
                self.spare[0].close()  # the spare worker reads EOF and exits
                self.exiting.append(self.spare[1])
            for process in self.exiting:
                process.join(10)
                if process.exitcode is None:
                    process.kill()
            if self.closing:
                self.closing.join()
            self.ray_heads.close()

    def _end(self, item: Active, status: str, reason: str = "", metrics: dict[str, float] | None = None) -> None:
        if status != "FINISHED" and item.key in self.ray_active:
            # What the cell left on its Ray head must not reach the slot's next cell. (Only a cell that ran on a
            # head can fail this way; the heads are closed in the background only once no such cell is left.)
            self.ray_heads.discard(self.slots[item.key])
        super()._end(item, status, reason, metrics)

    def _launch(self, cell: Cell) -> tuple[Connection, Any]:
        slot = min(set(range(self.jobs)) - set(self.slots.values()))
        env = {}
        cpus = _ray_cpus(cell)
        if cpus:
            self.ray_heads.prepare(slot, cpus)
            if self.ray_heads.ready(slot, cpus):
                address = self._head_address(cell, slot, cpus)
                if address:
                    env["RAY_ADDRESS"] = address
            else:  # the worker waits for the address (worker.AWAIT_RAY_HEAD), this loop does not
                env["RAY_ADDRESS"] = worker.AWAIT_RAY_HEAD
        parent, process = self.spare or self._spawn()
        self.spare = None
        try:
            parent.send((cell, cell.threads or self.threads, env))
        except OSError:  # the spare died while it waited: start one for this cell
            process.kill()
            parent, process = self._spawn()
            parent.send((cell, cell.threads or self.threads, env))
        self.unlaunched -= 1
        self.slots[parent] = slot
        if cpus:
            self.ray_left -= 1
            self.ray_active.add(parent)
            if env.get("RAY_ADDRESS") == worker.AWAIT_RAY_HEAD:
                self.awaiting[parent] = (slot, cpus)
        return parent, process

    def _head_address(self, cell: Cell, slot: int, cpus: int) -> str | None:
        """The address of the slot's head; None, said on the display, if it could not start."""
        try:
            return self.ray_heads.address(slot, cpus)
        except RuntimeError as exc:  # the cell can still start a Ray of its own, only slower
            self.display.log(f"[yellow]{escape(str(exc))}; {escape(cell.label())} starts its own[/]")
            return None

    def _hand_addresses(self) -> None:
        """Send each waiting cell its head's address once the head is up (None if it failed)."""
        for conn, (slot, cpus) in list(self.awaiting.items()):
            if self.ray_heads.ready(slot, cpus):
                del self.awaiting[conn]
                address = self._head_address(self.active[conn].cell, slot, cpus)
                try:
                    conn.send(("ray_address", address))
                except OSError:  # the worker died; its end is read from the pipe
                    pass

    def _spawn(self) -> tuple[Connection, Any]:
        """A worker process forked from the server, waiting for its cell (runners.worker.serve)."""
        parent, child = self.ctx.Pipe(duplex=True)
        process = self.ctx.Process(target=worker.serve, args=(child,), daemon=True)
        process.start()
        child.close()
        return parent, process

    def _poll(self, timeout: float) -> None:
        if self.spare is None and self.unlaunched > 0:
            self.spare = self._spawn()  # while the running cells compute
        super()._poll(timeout)

    def _ready(self, timeout: float) -> list[Connection]:
        heads = [self.ray_heads.waiting(*self.awaiting[c]) for c in self.awaiting]
        ready = wait([*self.active, *heads], timeout=timeout)  # type: ignore[arg-type]
        self._hand_addresses()
        return [key for key in ready if key in self.active]

    def _receive(self, item: Active) -> None:
        conn = item.key
        try:
            while conn.poll():
                message = conn.recv()
                kind = message[0]
                if kind == "progress":
                    self.display.cell_progress(conn, *message[1:])
                elif kind == "result":
                    record_result(self.tracker, item.run_id, item.cell, message[1])
                    self._end(item, "FINISHED", metrics=message[1].metrics)
                    return
                elif kind == "error":
                    self._end(item, "FAILED", message[1])
                    return
        except (EOFError, OSError):
            item.handle.join(5)
            code = item.handle.exitcode
            self._end(item, "FAILED", f"worker process died (exit code {code}) before sending a result")

    def _stop(self, item: Active) -> None:
        item.handle.kill()

    def _release(self, item: Active) -> None:
        """Free the cell's slot at once; its process, which has sent everything, is reaped later
        (the next cell need not wait for an interpreter with torch loaded to shut down)."""
        item.key.close()
        del self.slots[item.key]
        self.ray_active.discard(item.key)
        self.awaiting.pop(item.key, None)
        if not self.ray_left and not self.ray_active and self.ray_heads.holders and self.closing is None:
            # No cell needs the Ray heads any more: shut them down now, beside the cells still running,
            # rather than after the last one (a second or two each).
            self.closing = threading.Thread(target=self.ray_heads.close, name="close-ray-heads")
            self.closing.start()
        self.exiting = [p for p in self.exiting if p.exitcode is None]  # exitcode reaps the finished ones
        if item.handle.exitcode is None:
            self.exiting.append(item.handle)


def _ray_cpus(cell: Cell) -> int | None:
    """CPUs of the Ray runtime the cell's task starts (None: it starts none)."""
    task = get_task(cell.task)
    return task().ray_cpus(task.parse(cell.config))
