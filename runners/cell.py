"""One cell = one task config, executed in the current process with the suite's meters.

Every pool calls :func:`execute`: the inline pool (``suite run``) in its own process, the
sweep's pools inside a worker process or a Ray task per cell.
"""

from __future__ import annotations

import functools
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite import environment
from suite.config import BaseConfig, config_hash
from suite.examples import ExampleScores, check_against
from suite.meters import Stopwatch, peak_rss_mb
from suite.resolve import defaults_of
from suite.schema import validate_result
from suite.task import RunContext, Task, get_task


@dataclass(frozen=True)
class Cell:
    """A fully resolved run: task, tier and validated config."""

    task: str
    tier: str
    config: dict[str, Any]
    hash: str
    timeout_s: float = 600.0
    threads: int | None = None  # torch threads; None: the runner decides

    @classmethod
    def make(cls, task: type[Task], tier: str, config: BaseConfig, timeout_s: float | None = None) -> Cell:
        spec = task.tier(tier)
        return cls(task.name, tier, config.model_dump(mode="json"), config_hash(task.name, task.version, config),
                   timeout_s or spec.timeout_s, spec.threads)

    def label(self) -> str:
        """Task, method, the keys that differ from the tier's defaults, and the seed."""
        defaults = _tier_defaults(self.task, self.tier, str(self.config.get("method")))
        shown = [f"{self.config.get('method')}"]
        shown += [f"{k}={v}" for k, v in self.config.items()
                  if k not in ("method", "seed") and v is not None and defaults.get(k, v) != v]
        return f"{self.task} {' '.join(shown)} seed={self.config.get('seed')}"


@functools.cache
def _tier_defaults(task: str, tier: str, method: str) -> dict[str, Any]:
    return defaults_of(get_task(task), tier, method)


@dataclass
class CellResult:
    """What a cell produced: validated metrics, the phases it timed, and its environment."""

    metrics: dict[str, float]
    phases: list[str]
    environment: dict[str, Any] = field(default_factory=dict)
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (step, metrics) from ctx.log_step
    examples: list[ExampleScores] = field(default_factory=list)  # per-example test scores from ctx.record_*


def seed_everything(seed: int) -> None:
    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def execute(cell: Cell, *, threads: int | None = None,
            report: Callable[[str, float, float], None] | None = None) -> CellResult:
    """Run ``cell`` here and return its metrics; raises whatever the task raises."""
    task_cls = get_task(cell.task)
    config = task_cls.parse(cell.config)
    _set_threads(threads)
    seed_everything(config.seed)
    data_dir = os.environ.get("SUITE_DATA")
    ctx = RunContext(tier=cell.tier, data_dir=Path(data_dir) if data_dir else None,
                     report=report or (lambda *_: None))
    watch = Stopwatch().start()
    raw = task_cls().run(config, ctx)
    watch.stop()
    metrics = validate_result(raw, task_cls.metrics)
    history = [(step, validate_result(values, task_cls.metrics)) for step, values in ctx.history]
    check_against(ctx.examples, metrics)  # the recorded examples must be the evaluation the metric came from
    metrics.update({f"compute/{name}_s": secs for name, secs in ctx.phases.items()})
    metrics.update({"compute/wall_s": watch.wall_s, "compute/cpu_s": watch.cpu_s, "compute/peak_rss_mb": peak_rss_mb()})
    return CellResult(metrics, sorted(ctx.phases), environment.describe(), history, ctx.examples)


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
