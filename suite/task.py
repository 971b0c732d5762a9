"""The task contract and the task registry.

A task is one file and one YAML. Subclass :class:`Task` and register it where it is
defined::

    from typing import Literal
    from suite.config import TaskConfig
    from suite.schema import Metric
    from suite.task import RunContext, Task, register_task

    class ToyConfig(TaskConfig):
        method: Literal["a", "b"] = "a"
        steps: int = 10  # training steps

    @register_task("toy")
    class ToyTask(Task):
        Config = ToyConfig
        metrics = {"utility/accuracy": Metric("higher", "fraction")}

        def run(self, config: ToyConfig, ctx: RunContext) -> dict[str, float]:
            with ctx.phase("train"):
                ...
            return {"utility/accuracy": 0.9}

Task modules must import only light libraries at module level (pydantic, the suite core):
``suite list`` imports every task module, and heavy libraries (torch, opacus, flwr,
transformers, ray) belong inside ``run`` or in a sibling module it imports.
"""

from __future__ import annotations

import abc
import importlib
import os
import time
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from suite.config import TaskConfig, Tier, build_config, load_tier
from suite.errors import UsageError
from suite.privacy import SAMPLERS
from suite.registry import Registry
from suite.schema import COMMON_METRICS, PRIVACY_UNITS, Metric, check_schema

TASKS: Registry[type[Task]] = Registry("task")
_TASK_PACKAGE = Path(__file__).resolve().parent.parent / "tasks"


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: register a :class:`Task` subclass under ``name``."""

    def decorate(cls: type[Task]) -> type[Task]:
        cls.name = name
        cls.check_declaration()
        TASKS.add(name, cls)
        return cls

    return decorate


@dataclass
class RunContext:
    """What a task's ``run`` gets besides its config: tier, data, progress and phase timers."""

    tier: str
    data_dir: Path | None = None
    artifact_dir: Path | None = None
    report: Callable[[str, float, float], None] = lambda desc, done, total: None
    phases: dict[str, float] = field(default_factory=dict)
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase (``train``, ``eval``, ...); the runner logs it as ``compute/<name>_s``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start

    def progress(self, desc: str, done: float, total: float) -> None:
        """Report progress of long work (shown as a live bar with ETA)."""
        self.report(desc, done, total)

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        """Record declared metrics at a step (a round, an epoch): logged as MLflow metric history.

        The run's returned metrics stay the headline values; the history shows how they got there.
        """
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        self.history.append((int(step), {k: float(v) for k, v in metrics.items()}))


class Task(abc.ABC):
    """Base of every benchmark task.

    Write three things:

    * ``Config``: a :class:`~suite.config.TaskConfig` subclass whose ``method`` field is a
      ``Literal`` of the task's methods; its fields mirror the YAML keys one to one.
    * ``metrics``: ``{"<axis>/<name>": Metric(direction, unit, description)}`` for every
      metric ``run`` may return.
    * ``run(config, ctx)``: do the work, return ``{metric key: float}``.

    Optional: ``version`` (bump it when results stop being comparable), ``description``,
    ``privacy_unit``, ``accountant`` and ``sampler`` (tags), ``reference`` (the run a slowdown is
    measured against), ``pareto`` (the metric pairs the leaderboard plots), ``notes`` (caveats the
    leaderboard shows on the family page) and ``preload`` (heavy modules a sweep imports once, up front).
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    Config: ClassVar[type[TaskConfig]]
    metrics: ClassVar[Mapping[str, Metric]]
    preload: ClassVar[tuple[str, ...]] = ()
    # (x metric, y metric) pairs the leaderboard draws as Pareto plots, e.g. accuracy vs epsilon.
    pareto: ClassVar[tuple[tuple[str, str], ...]] = ()
    # Task-level caveats a reader of the results must know (e.g. "hyperparameters were tuned without
    # accounting"): written into every run's result.json and shown on the leaderboard's family page.
    notes: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def run(self, config: Any, ctx: RunContext) -> dict[str, float]:
        """Run one configuration and return its metrics."""

    def privacy_unit(self, config: Any) -> str:
        """What one privacy guarantee protects: example, label, client, or none."""
        return "none"

    def accountant(self, config: Any) -> str:
        """The accountant behind ``privacy/epsilon`` (``none`` when there is none)."""
        return "none"

    def sampler(self, config: Any) -> str | None:
        """How the accountant's mechanism drew its batches (``poisson``, ``fixed_size`` or ``none``, see
        :mod:`suite.privacy`), tagged ``privacy.sampler``; ``None`` when no accountant analyses the run."""
        return None

    def reference(self, config: Any) -> TaskConfig | None:
        """The config whose run this one's slowdown is measured against, if any."""
        return None

    # -- helpers the runners use; tasks need not touch them --------------------------

    @classmethod
    def check_declaration(cls) -> None:
        if not isinstance(getattr(cls, "Config", None), type) or not issubclass(cls.Config, TaskConfig):
            raise TypeError(f"task {cls.__name__} must set Config to a TaskConfig subclass")
        check_schema(cls.metrics)
        if not isinstance(cls.notes, tuple) or not all(isinstance(n, str) and n.strip() for n in cls.notes):
            raise TypeError(f"task {cls.__name__}: notes must be a tuple of non-empty strings")
        for pair in cls.pareto:
            missing = [k for k in pair if k not in cls.result_schema() and not _is_phase_time(k)]
            if missing:
                raise TypeError(f"task {cls.__name__}: pareto pair {pair} names undeclared metrics {missing}")

    @classmethod
    def methods(cls) -> tuple[str, ...]:
        annotation = cls.Config.model_fields["method"].annotation
        if typing.get_origin(annotation) is typing.Literal:
            return tuple(typing.get_args(annotation))
        raise TypeError(f"{cls.__name__}.Config.method must be a Literal of the task's methods")

    @classmethod
    def result_schema(cls, phases: Iterable[str] = ()) -> dict[str, Metric]:
        """Declared metrics, the runner's common meters, and ``compute/<phase>_s`` per timed phase."""
        timed = {f"compute/{p}_s": Metric("lower", "s", f"wall time of the {p} phase") for p in phases}
        return {**COMMON_METRICS, **timed, **cls.metrics}

    @classmethod
    def config_dir(cls) -> Path:
        return Path(importlib.import_module(cls.__module__).__file__).resolve().parent / "configs"

    @classmethod
    def tiers(cls) -> list[str]:
        return sorted(p.stem for p in cls.config_dir().glob("*.yaml"))

    @classmethod
    def tier(cls, tier: str) -> Tier:
        return load_tier(cls.config_dir(), tier)

    @classmethod
    def resolve(cls, tier: str, overrides: Mapping[str, Any] | None = None) -> TaskConfig:
        """The tier's default config with ``overrides`` applied, validated."""
        return build_config(cls.Config, {**cls.tier(tier).defaults, **(overrides or {})})

    def tags(self, config: Any) -> dict[str, str]:
        unit = self.privacy_unit(config)
        if unit not in PRIVACY_UNITS:
            raise ValueError(f"{self.name}: privacy unit {unit!r} not in {PRIVACY_UNITS}")
        tags = {"privacy.unit": unit, "privacy.accountant": self.accountant(config)}
        sampler = self.sampler(config)
        if sampler is not None:
            if sampler not in SAMPLERS:
                raise ValueError(f"{self.name}: sampler {sampler!r} not in {SAMPLERS}")
            tags["privacy.sampler"] = sampler
        return tags


def _is_phase_time(key: str) -> bool:
    return key.startswith("compute/") and key.endswith("_s")


def discover() -> Registry[type[Task]]:
    """Import every ``tasks/<family>/task.py`` so that its decorators register it.

    Task modules kept outside this repository are added by naming them, comma-separated,
    in ``SUITE_TASK_MODULES`` (e.g. ``SUITE_TASK_MODULES=mylab.tasks.toy``).
    """
    modules = [f"tasks.{p.parent.name}.task" for p in sorted(_TASK_PACKAGE.glob("*/task.py"))
               if not p.parent.name.startswith(("_", "."))]
    modules += [m.strip() for m in os.environ.get("SUITE_TASK_MODULES", "").split(",") if m.strip()]
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                raise UsageError(f"task module {module!r} not found (from SUITE_TASK_MODULES?): {exc}") from None
            raise
    return TASKS


def get_task(name: str) -> type[Task]:
    """Look a task up by name, importing the task modules first."""
    return discover().get(name)
