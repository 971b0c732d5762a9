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
from collections.abc import Iterable, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from runners import worker
from runners.cell import Cell
from runners.outcome import Outcome, record_result
from runners.pool import Active, CellPool
from runners.references import link_slowdowns
from suite.config import build_config, expand_grid
from suite.errors import ConfigError
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


class _Pool(CellPool):
    """Runs cells in forkserver workers, ``jobs`` at a time, and records them."""

    def __init__(self, tracker: Tracker, jobs: int, preload: Iterable[str]) -> None:
        if jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {jobs}")
        super().__init__(tracker, jobs)
        self.threads = max(1, (os.cpu_count() or 1) // jobs)
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(["runners.worker", *preload])

    def _launch(self, cell: Cell) -> tuple[Connection, Any]:
        parent, child = self.ctx.Pipe(duplex=False)
        process = self.ctx.Process(target=worker.main, args=(cell, cell.threads or self.threads, child), daemon=True)
        process.start()
        child.close()
        return parent, process

    def _ready(self, timeout: float) -> list[Connection]:
        return wait(list(self.active), timeout=timeout)  # type: ignore[arg-type]

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
        item.key.close()
        item.handle.join(10)
