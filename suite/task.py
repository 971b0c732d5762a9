"""The task contract and the task registry.

A task is registered by name where it is defined. Its methods are plugins (:mod:`suite.method`):
the task names its family's base config and method registry, and each method is one class in
one file of the family's ``methods`` package::

    from tasks.toy.config import METHODS, ToyConfig

    @register_task("toy")
    class ToyTask(Task):
        Config = ToyConfig  # the keys every method reads
        method_registry = METHODS  # the methods, each with its own config and run
        metrics = {"utility/accuracy": Metric("higher", "fraction")}

``Task.run`` runs the config's method; a family whose methods vary one step of a shared
pipeline overrides ``run`` and calls that step on ``self.method_of(config)``.

Task modules must import only light libraries at module level (pydantic, the suite core):
``suite list`` imports every task module and its methods, and heavy libraries (torch, opacus,
flwr, transformers, ray) belong inside ``run`` or in a sibling module it imports.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from suite import resolve as _resolve
from suite.config import BaseConfig, Tier, load_tier
from suite.context import RunContext
from suite.errors import UsageError
from suite.method import Method, MethodRegistry
from suite.claims import Claim, check_claims
from suite.privacy import SAMPLERS
from suite.registry import Registry
from suite.schema import COMMON_METRICS, PRIVACY_UNITS, Curve, Metric, check_schema

__all__ = ["TASKS", "RunContext", "Task", "discover", "get_task", "register_task"]

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


class Task:
    """Base of every benchmark task.

    Write:

    * ``Config``: the family's base config, a :class:`~suite.config.BaseConfig` subclass with
      the keys every method reads; its fields mirror the YAML keys one to one.
    * ``method_registry``: the family's :class:`~suite.method.MethodRegistry`.
    * ``metrics``: ``{"<axis>/<name>": Metric(direction, unit, description)}`` for every
      metric a run may return.

    Optional: ``run`` (default: the method's own ``run``), ``version`` (bump it when results
    stop being comparable), ``description``, ``reference`` (the run a slowdown is measured
    against; default: the method's), ``pareto`` (the metric pairs the leaderboard plots),
    ``notes`` (caveats the leaderboard shows on the family page),
    ``claims`` (the paper's claims, tested by ``suite claims``; see :mod:`suite.claims`),
    ``curves`` (lines through metrics the leaderboard draws, :class:`~suite.schema.Curve`) and
    ``preload`` (heavy modules a sweep imports once, up front).
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    Config: ClassVar[type[BaseConfig]]
    method_registry: ClassVar[MethodRegistry]
    metrics: ClassVar[Mapping[str, Metric]]
    preload: ClassVar[tuple[str, ...]] = ()
    # (x metric, y metric) pairs the leaderboard draws as Pareto plots, e.g. accuracy vs epsilon.
    pareto: ClassVar[tuple[tuple[str, str], ...]] = ()
    # The paper's claims as paired comparisons of the task's configurations (suite/claims.py).
    claims: ClassVar[tuple[Claim, ...]] = ()
    # Lines through metrics (e.g. exposure at 1, 4, 16, 64 repetitions), one per configuration.
    curves: ClassVar[tuple[Curve, ...]] = ()
    # Task-level caveats a reader of the results must know (e.g. "hyperparameters were tuned without
    # accounting"): written into every run's result.json and shown on the leaderboard's family page.
    notes: ClassVar[tuple[str, ...]] = ()

    def run(self, config: Any, ctx: RunContext) -> dict[str, float]:
        """Run one configuration and return its metrics: by default, the config's method runs it
        (its ``run(config, ctx)``); a family whose methods are steps of its own run overrides this."""
        method = self.method_of(config)
        run = getattr(method, "run", None)
        if run is None:
            raise TypeError(f"task {self.name!r}: method {method.name!r} has no run(config, ctx); write one, or "
                            "override the task's run to drive its methods")
        return run(config, ctx)

    def method_of(self, config: BaseConfig) -> Method:
        """The method that runs ``config``."""
        return self.method_registry.get(config.method)()

    def privacy_unit(self, config: Any) -> str:
        """What one privacy guarantee protects: example, label, client, or none."""
        return self.method_of(config).privacy_unit(config)

    def accountant(self, config: Any) -> str:
        """The accountant behind ``privacy/epsilon`` (``none`` when there is none)."""
        return self.method_of(config).accountant(config)

    def sampler(self, config: Any) -> str | None:
        """How a DP run samples its batches (tag ``privacy.sampler``); None when the run is not DP."""
        return self.method_of(config).sampler(config)

    def reference(self, config: Any) -> BaseConfig | None:
        """The config whose run this one's slowdown is measured against, if any."""
        return self.method_of(config).reference(config)

    def ray_cpus(self, config: Any) -> int | None:
        """CPUs of the Ray runtime the run starts, if it starts one (None: it does not).

        A local sweep then starts one Ray head per worker slot and lends it to the run through
        ``RAY_ADDRESS`` (runners/rayhead.py), instead of each run starting its own.
        """
        return None

    # -- helpers the runners use; tasks need not touch them --------------------------

    @classmethod
    def check_declaration(cls) -> None:
        if not isinstance(getattr(cls, "Config", None), type) or not issubclass(cls.Config, BaseConfig):
            raise TypeError(f"task {cls.__name__} must set Config to a BaseConfig subclass")
        registry = getattr(cls, "method_registry", None)
        if not isinstance(registry, MethodRegistry):
            raise TypeError(f"task {cls.__name__} must set method_registry to its family's MethodRegistry "
                            f"(got {registry!r}): each method is a class with its own config (suite.method)")
        if not issubclass(registry.base, cls.Config):
            raise TypeError(f"task {cls.__name__}: its methods' base config must be Config or a subclass")
        check_schema(cls.metrics)
        if not isinstance(cls.notes, tuple) or not all(isinstance(n, str) and n.strip() for n in cls.notes):
            raise TypeError(f"task {cls.__name__}: notes must be a tuple of non-empty strings")
        for pair in cls.pareto:
            missing = [k for k in pair if k not in cls.result_schema() and not _is_phase_time(k)]
            if missing:
                raise TypeError(f"task {cls.__name__}: pareto pair {pair} names undeclared metrics {missing}")
        check_claims(cls)
        for curve in cls.curves:
            missing = [key for _, key in curve.points if key not in cls.result_schema()]
            if missing:
                raise TypeError(f"task {cls.__name__}: curve {curve.name!r} names undeclared metrics {missing}")

    @classmethod
    def methods(cls) -> tuple[str, ...]:
        """The names of the task's methods."""
        return tuple(cls.method_registry.names())

    @classmethod
    def config_model(cls, method: str) -> type[BaseConfig]:
        """The config class of ``method``."""
        return cls.method_registry.get(method).Config

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
        """The tier file, read and checked (a defaults or smoke key that no method has is an error)."""
        spec = load_tier(cls.config_dir(), tier)
        _resolve.check_tier(cls, spec)
        return spec

    @classmethod
    def resolve(cls, tier: str, overrides: Mapping[str, Any] | None = None) -> BaseConfig:
        """The tier's default config with ``overrides`` applied, validated (see :mod:`suite.resolve`)."""
        return _resolve.resolve(cls, tier, overrides)

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> BaseConfig:
        """A config from complete values (a cell's, a stored ``config.json``'s), validated strictly."""
        return _resolve.build(cls, [_resolve.strict(values)])

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


def declared_claims(tasks: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The registered tasks' claims in serialized form: the claim, its task and the task's version.

    >>> [c["id"] for c in declared_claims(["labeldp"])][:1]   # doctest: +SKIP
    ['labeldp.alibi_beats_rr']
    """
    registry = discover()
    out = []
    for name in tasks if tasks is not None else registry.names():
        task = registry.get(name)
        for claim in task.claims:
            out.append({**claim.to_json(), "id": f"{name}.{claim.id}", "task": name, "task_version": task.version})
    return out


def get_task(name: str) -> type[Task]:
    """Look a task up by name, importing the task modules first."""
    return discover().get(name)
