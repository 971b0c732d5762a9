"""From a task's tier file and overrides to a validated config.

A task's methods are plugins (``Task.method_registry``, see :mod:`suite.method`): the method is
the last ``method`` that a layer sets (tier defaults, grid point, overrides), and its config
class validates the result.

* Lenient layers (the tier's ``defaults`` and ``smoke``, a sweep's ``--set``) apply to the keys
  the method has and pass over the others.
* Strict layers (a grid point, ``suite run --set``, a stored config) must name keys of the
  method: a key of another method is refused, naming the methods that have it.

>>> resolve(get_task("toy"), "quick", {"method": "hang", "hang_s": 1})   # doctest: +SKIP
HangConfig(method='hang', seed=0, sleep_s=0.0, value=0.5, hang_s=1.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from suite.config import BaseConfig, Tier, build_config, expand_grid
from suite.errors import ConfigError
from suite.registry import unknown_name_message

if TYPE_CHECKING:
    from suite.task import Task


@dataclass(frozen=True)
class Layer:
    """Config values from one source; ``strict``: every key must be a key of the method."""

    values: Mapping[str, Any]
    strict: bool


def lenient(values: Mapping[str, Any] | None) -> Layer:
    return Layer(dict(values or {}), strict=False)


def strict(values: Mapping[str, Any] | None) -> Layer:
    return Layer(dict(values or {}), strict=True)


def build(task: type[Task], layers: Sequence[Layer]) -> BaseConfig:
    """The task's config from ``layers`` (later ones win), validated; a ConfigError names each bad key."""
    method = _method(task, layers)
    model = task.method_registry.get(method).Config
    values: dict[str, Any] = {}
    for layer in layers:
        if layer.strict:
            _check_keys(task, method, layer.values)
        values.update({k: v for k, v in layer.values.items() if k in model.model_fields})
    return build_config(model, {**values, "method": method}, title=f"{task.name} method {method}")


def resolve(task: type[Task], tier: str, overrides: Mapping[str, Any] | None = None) -> BaseConfig:
    """The tier's defaults with ``overrides`` (strict) applied: ``suite run`` and ``suite show``."""
    return build(task, [lenient(task.tier(tier).defaults), strict(overrides)])


def smoke(task: type[Task], method: str, tier: str = "quick") -> BaseConfig:
    """The smallest config of ``method``: the tier's defaults and ``smoke`` overrides (conformance test)."""
    spec = task.tier(tier)
    return build(task, [lenient(spec.defaults), lenient(spec.smoke), lenient({"method": method})])


def grid(task: type[Task], tier: str, overrides: Mapping[str, Any] | None = None) -> tuple[list[BaseConfig], set[str]]:
    """Every grid point of the tier as a config, with a sweep's ``overrides`` applied where the method has
    the key; and the override keys some config took (a key no config takes is the caller's error)."""
    spec = task.tier(tier)
    configs: list[BaseConfig] = []
    used: set[str] = set()
    for point in expand_grid(spec.grid):
        try:
            config = build(task, [lenient(spec.defaults), strict(point), lenient(overrides)])
        except ConfigError as exc:
            raise ConfigError(f"{task.name} {tier} grid cell {point} ({spec.path}): {exc}") from None
        used |= set(overrides or {}) & set(type(config).model_fields)
        configs.append(config)
    return configs, used


def defaults_of(task: type[Task], tier: str, method: str) -> dict[str, Any]:
    """The tier's default values for ``method`` (as JSON values), to show what a cell changes."""
    spec = task.tier(tier)
    try:
        return build(task, [lenient(spec.defaults), lenient({"method": method})]).model_dump(mode="json")
    except ConfigError:  # a key the method requires has no default: compare with the file's values
        return dict(spec.defaults)


def check_tier(task: type[Task], spec: Tier) -> None:
    """``defaults`` and ``smoke`` may set any method's keys, but no key that no method has."""
    holders = task.method_registry.holders()
    for section in ("defaults", "smoke"):
        for key in getattr(spec, section):
            if key not in holders:
                raise ConfigError(f"{spec.path}: {section} sets {key!r}, which no method of {task.name} has: "
                                  + unknown_name_message("key", key, sorted(holders)))


def _method(task: type[Task], layers: Sequence[Layer]) -> str:
    chosen = None
    for layer in layers:
        chosen = layer.values.get("method", chosen)
    if chosen is None:
        raise ConfigError(f"invalid config for {task.name}: method is not set; choose one of "
                          f"{', '.join(task.methods())} (--set method=NAME)")
    task.method_registry.get(str(chosen))  # unknown: names the known methods
    return str(chosen)


def _check_keys(task: type[Task], method: str, values: Mapping[str, Any]) -> None:
    model = task.method_registry.get(method).Config
    holders = task.method_registry.holders()
    lines = []
    for key in [k for k in values if k not in model.model_fields]:
        if key in holders:
            lines.append(f"  key {key!r} is not a key of method {method}; methods that have it: "
                         f"{', '.join(holders[key])}")
        else:
            lines.append("  " + unknown_name_message("key", key, list(model.model_fields))
                         .replace("known keys", "allowed keys"))
    if lines:
        raise ConfigError("\n".join([f"invalid config for {task.name} method {method}:", *lines]))
