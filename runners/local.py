"""The local runner: one config, one MLflow run, in this process.

>>> from runners.local import run_one
>>> outcome = run_one(get_task("dpsgd"), "quick", config)   # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from runners.cell import Cell, execute
from runners.outcome import Interrupted, Outcome, failure_reason, open_run, record_result, sigterm_as_interrupt
from suite.config import TaskConfig
from suite.task import Task
from suite.tracking import Tracker


def run_one(task: type[Task], tier: str, config: TaskConfig, *, tracker: Tracker, force: bool = False,
            report: Callable[[str, float, float], None] | None = None) -> Outcome:
    """Run ``config`` once and record it; a FINISHED run of the same hash is reused unless ``force``.

    A raised exception or a NaN metric ends the run FAILED with the reason in the tag
    ``suite.failure_reason``; Ctrl-C or SIGTERM ends it KILLED and re-raises.
    """
    cell = Cell.make(task, tier, config)
    if not force:
        done = tracker.finished_hashes(task.name).get(cell.hash)
        if done:
            return Outcome(cell, "CACHED", done)
    start = time.perf_counter()
    with sigterm_as_interrupt():
        run_id = open_run(tracker, cell)
        try:
            result = execute(cell, threads=cell.threads or os.cpu_count(), report=report)
            record_result(tracker, run_id, cell, result)
        except KeyboardInterrupt as exc:
            signame = exc.signame if isinstance(exc, Interrupted) else "SIGINT"
            tracker.end(run_id, "KILLED", f"interrupted by {signame}")
            raise
        except Exception as exc:
            reason = failure_reason(exc)
            tracker.end(run_id, "FAILED", reason)
            return Outcome(cell, "FAILED", run_id, reason=reason, wall_s=time.perf_counter() - start)
    return Outcome(cell, "FINISHED", run_id, result.metrics, wall_s=time.perf_counter() - start)
