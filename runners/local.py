"""``suite run``: one config, one MLflow run, computed in this process by a pool of one.

The run goes through the same lifecycle as a sweep's cells (:func:`runners.pool.run_cells`):
stale runs are reaped, a FINISHED run of the config is reused unless forced, a config a live
process is running now is left to it (BUSY), and the run is opened, recorded and ended by the
same pool code.

>>> from runners.local import run_one
>>> outcome = run_one(get_task("dpsgd"), "quick", config, tracker=Tracker())   # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from typing import Any

from runners.cell import Cell, execute
from runners.outcome import Outcome, failure_reason, record_result
from runners.pool import Active, CellPool, run_cells
from suite.config import BaseConfig
from suite.task import Task
from suite.tracking import Tracker


def run_one(task: type[Task], tier: str, config: BaseConfig, *, tracker: Tracker, force: bool = False) -> Outcome:
    """Run ``config`` once in this process and record it; a FINISHED run of the same hash is reused unless ``force``.

    A raised exception or a NaN metric ends the run FAILED with the reason in the tag
    ``suite.failure_reason``; Ctrl-C or SIGTERM ends it KILLED and re-raises.
    """
    [outcome] = run_cells([Cell.make(task, tier, config)], tracker=tracker, pool=lambda: InlinePool(tracker),
                          force=force)
    return outcome


class InlinePool(CellPool):
    """Computes its cells one at a time in this process. Nothing can stop in-process work at a time
    limit, so a cell runs to its end (or to Ctrl-C / SIGTERM, which ends it KILLED)."""

    title = "run"

    def __init__(self, tracker: Tracker) -> None:
        super().__init__(tracker, jobs=1)

    def _launch(self, cell: Cell) -> tuple[Hashable, Any]:
        return cell.hash, None  # computed when received, so that an interrupt finds it active

    def _ready(self, timeout: float) -> list[Hashable]:
        return list(self.active)

    def _receive(self, item: Active) -> None:
        def report(desc: str, done: float, total: float) -> None:
            self.display.cell_progress(item.key, desc, done, total)

        try:
            result = execute(item.cell, threads=item.cell.threads or os.cpu_count(), report=report)
        except Exception as exc:  # noqa: BLE001 - a failing task is a FAILED run, not a crash of the runner
            self._end(item, "FAILED", failure_reason(exc))
            return
        record_result(self.tracker, item.run_id, item.cell, result)
        self._end(item, "FINISHED", metrics=result.metrics)

    def _stop(self, item: Active) -> None:
        """Nothing to kill: the interrupt that stops the pool has already left the cell's code."""
