"""A fast task with planned faults, for testing the runners (no torch), in the plugin shape.

The family's config and methods registry are in tests/toy/config.py, its methods in
tests/toy/methods/. The toy's run is a pipeline the methods share (sleep in steps, reporting
progress and a metric history); each method varies its last step (``ToyMethod.outcome``).
"""

from __future__ import annotations

import time
from pathlib import Path

from suite.schema import Metric
from suite.task import RunContext, Task, register_task
from tests.toy.config import METHODS, ToyConfig


@register_task("toy")
class ToyTask(Task):
    description = "test task with planned faults"
    Config = ToyConfig
    method_registry = METHODS
    metrics = {
        "utility/accuracy": Metric("higher", "fraction", "the configured value"),
        "privacy/epsilon": Metric("lower", "epsilon", "noisy: epsilon of the Laplace noise added"),
        "compute/steps": Metric("none", "steps", "sleep steps taken"),
    }

    def run(self, config: ToyConfig, ctx: RunContext) -> dict[str, float]:
        steps = int(config.sleep_s / 0.05)
        with ctx.phase("train"):
            for i in range(steps):
                time.sleep(0.05)
                ctx.progress("sleeping", i + 1, steps)
                ctx.log_step(i + 1, {"utility/accuracy": config.value * (i + 1) / steps})
            metrics = self.method_of(config).outcome(config, config.value + config.seed / 100)
        return {**metrics, "compute/steps": float(steps)}


@register_task("toyload")
class ToyLoadTask(ToyTask):
    """The toy task with a 200-cell quick grid, for load tests (benchmarks/load.py)."""

    description = "test task: 200 instant cells"

    @classmethod
    def config_dir(cls) -> Path:
        return Path(__file__).resolve().parent / "load_configs"


@register_task("toyfault")
class ToyFaultTask(ToyTask):
    """The toy task with a 24-cell quick grid of short cells, for fault injection."""

    description = "test task: 24 short cells"

    @classmethod
    def config_dir(cls) -> Path:
        return Path(__file__).resolve().parent / "fault_configs"
