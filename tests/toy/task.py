"""A fast task with planned faults, for testing the runners (no torch)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from suite.config import TaskConfig
from suite.schema import Metric
from suite.task import RunContext, Task, register_task


class ToyConfig(TaskConfig):
    method: Literal["ok", "crash", "nan", "hang"] = "ok"  # ok returns metrics; the others fail on purpose
    sleep_s: float = Field(0.0, ge=0)  # time spent "training", in steps of 50 ms
    value: float = 0.5  # the accuracy the run reports


@register_task("toy")
class ToyTask(Task):
    description = "test task with planned faults"
    Config = ToyConfig
    metrics = {
        "utility/accuracy": Metric("higher", "fraction", "the configured value"),
        "compute/steps": Metric("none", "steps", "sleep steps taken"),
    }

    def run(self, config: ToyConfig, ctx: RunContext) -> dict[str, float]:
        steps = int(config.sleep_s / 0.05)
        with ctx.phase("train"):
            for i in range(steps):
                time.sleep(0.05)
                ctx.progress("sleeping", i + 1, steps)
                ctx.log_step(i + 1, {"utility/accuracy": config.value * (i + 1) / steps})
            if config.method == "hang":
                time.sleep(3600)
            if config.method == "crash":
                raise RuntimeError("planned crash of the toy task")
        value = float("nan") if config.method == "nan" else config.value + config.seed / 100
        return {"utility/accuracy": value, "compute/steps": float(steps)}


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
