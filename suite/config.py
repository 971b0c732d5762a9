"""Strict task configs: pydantic models, per-tier YAML files, ``--set`` overrides.

A tier file ``tasks/<family>/configs/<tier>.yaml`` has these top-level keys:

``defaults``
    values for the task's config keys (the resolved default config of the tier); in a task
    whose methods are plugins (:mod:`suite.method`), a key applies to the methods that have it;
``grid``
    a list of sub-grids, each a mapping ``key: [values]``; a sweep runs the union of
    their cartesian products (duplicates removed by config hash); a grid point's keys must
    all be keys of its method;
``smoke``
    overrides that make the smallest config, run by the conformance test (like ``defaults``,
    a key applies to the methods that have it);
``timeout_s``
    the per-cell time limit of a sweep;
``threads``
    torch threads per cell (default: the machine's cores divided by the sweep's jobs);
    tiny models run fastest on one thread;
``estimates``
    expected seconds of cells a store has never run, for a sweep's longest-first order: a list of
    ``{seconds: S, <key>: <value>, ...}``, the first entry whose keys all match a cell giving its
    estimate (an entry with no keys matches every cell). Durations the store holds come first.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from suite.errors import ConfigError
from suite.registry import unknown_name_message

TIERS = ("quick", "full")
_TIER_KEYS = {"defaults", "grid", "smoke", "timeout_s", "threads", "estimates"}


class BaseConfig(BaseModel):
    """Keys every config of every task has.

    A family's base config subclasses it with the keys all of the family's methods read; each
    method's config subclasses that with ``method: Literal["<name>"] = "<name>"`` and the keys
    only that method reads (:mod:`suite.method`). Private methods add a budget mixin
    (:class:`PureDPBudget` or :class:`ApproxDPBudget`), so a non-private config has no epsilon;
    families add :class:`DataLocation` and :class:`DeviceChoice`. Name mixins first among the
    bases (``class AlibiConfig(PureDPBudget, LabelDPConfig)``): pydantic lists the keys of the
    last base first, so the mixins' keys then follow ``method`` and ``seed``.

    No key of any task takes a non-finite number: ``epsilon=inf`` (or ``nan``, ``1e400``) is refused
    when the config is read, naming the key, rather than reaching an accountant or an optimizer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    method: str  # which method of the task to run
    seed: int = Field(0, ge=0)  # seeds model init, sampling and noise


class PureDPBudget(BaseModel):
    """Mixin of a method with a pure epsilon-DP target (randomized response, Laplace noise)."""

    epsilon: float = Field(gt=0)  # target privacy budget


class ApproxDPBudget(BaseModel):
    """Mixin of a method with an (epsilon, delta)-DP target (DP-SGD, PATE)."""

    epsilon: float = Field(gt=0)  # target privacy budget
    delta: float = Field(gt=0, lt=1)  # target delta


class DataLocation(BaseModel):
    """Mixin of a family whose full tier reads data sets from disk (or downloads them)."""

    data_dir: str | None = None  # local data directory (default: $SUITE_DATA)
    download: bool = False  # let the data set's library download it when the network allows


class DeviceChoice(BaseModel):
    """Mixin of a family that trains with torch; :func:`suite.device.resolve_device` reads it."""

    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto picks cuda when available


@dataclass(frozen=True)
class Tier:
    """One tier file of a task, read and checked."""

    name: str
    defaults: dict[str, Any]
    grid: list[dict[str, list[Any]]]
    smoke: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 600.0
    threads: int | None = None
    estimates: list[dict[str, Any]] = field(default_factory=list)  # {seconds, key: value...} for never-run cells
    path: Path | None = None  # the file it was read from, for errors


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser, where PyYAML was built with it
_PARSED: dict[tuple[Path, int, int], Any] = {}


def _read_yaml(path: Path) -> Any:
    """The parsed file, a fresh copy; parsed once per content (a sweep reads each tier file per cell)."""
    stat = path.stat()
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _PARSED:
        _PARSED[key] = yaml.load(path.read_text(), Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    return copy.deepcopy(_PARSED[key])


def load_tier(config_dir: Path, tier: str) -> Tier:
    """Read ``<config_dir>/<tier>.yaml``; errors name the file and the bad key."""
    if tier not in TIERS:
        raise ConfigError(unknown_name_message("tier", tier, list(TIERS)))
    path = config_dir / f"{tier}.yaml"
    if not path.is_file():
        raise ConfigError(f"no {tier} tier for this task: {path} does not exist")
    try:
        raw = _read_yaml(path) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {sorted(_TIER_KEYS)}")
    unknown = set(raw) - _TIER_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(_TIER_KEYS)}")
    grid = raw.get("grid") or [{}]
    for i, sub in enumerate(grid):
        if not isinstance(sub, dict) or not all(isinstance(v, list) and v for v in sub.values()):
            raise ConfigError(f"{path}: grid[{i}] must map each key to a non-empty list of values")
    return Tier(
        name=tier,
        defaults=dict(raw.get("defaults") or {}),
        grid=[dict(sub) for sub in grid],
        smoke=dict(raw.get("smoke") or {}),
        timeout_s=float(raw.get("timeout_s", 600.0)),
        threads=int(raw["threads"]) if raw.get("threads") else None,
        estimates=_estimates(path, raw.get("estimates") or []),
        path=path,
    )


def _estimates(path: Path, raw: Any) -> list[dict[str, Any]]:
    """The ``estimates`` entries, each a mapping with a positive number ``seconds``."""
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: estimates must be a list of mappings with a 'seconds' key")
    for i, entry in enumerate(raw):
        seconds = entry.get("seconds") if isinstance(entry, dict) else None
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ConfigError(f"{path}: estimates[{i}] must be a mapping with a positive number 'seconds', "
                              f"got {entry!r}")
    return [dict(entry) for entry in raw]


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """Turn ``["lr=0.1", "method=dpsgd"]`` into a dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        try:
            out[key] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            out[key] = text
    return out


def build_config(model: type[BaseConfig], values: Mapping[str, Any], *, title: str = "") -> BaseConfig:
    """Validate ``values`` against ``model``; a failure becomes a ConfigError naming each bad key.

    ``title`` names the config in the message (default: the model's class name).
    """
    try:
        return model(**values)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(model, exc, title=title)) from None


def format_validation_error(model: type[BaseConfig], exc: ValidationError, *, title: str = "") -> str:
    fields = list(model.model_fields)
    lines = [f"invalid config for {title or model.__name__}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(config)"
        if err["type"] == "extra_forbidden":
            lines.append("  " + unknown_name_message("key", key, fields).replace("known keys", "allowed keys"))
            continue
        if not err["loc"]:  # a rule over several keys: its message names them; the input is the whole config
            lines.append(f"  {err['msg'].removeprefix('Value error, ')}")
            continue
        lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def expand_grid(grid: list[dict[str, list[Any]]]) -> list[dict[str, Any]]:
    """The union of the cartesian products of each sub-grid, in file order."""
    cells: list[dict[str, Any]] = []
    for sub in grid:
        keys = list(sub)
        for values in itertools.product(*(sub[k] for k in keys)):
            cells.append(dict(zip(keys, values)))
    return cells


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def config_hash(task: str, version: str, config: BaseConfig) -> str:
    """SHA-256 of the canonical JSON of the resolved config plus the task's name and version."""
    return config_values_hash(task, version, config.model_dump(mode="json"))


def config_values_hash(task: str, version: str, values: Mapping[str, Any]) -> str:
    """:func:`config_hash` of a config already dumped to JSON values (as logged in ``config.json``)."""
    payload = {"task": task, "version": version, "config": values}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def describe_fields(model: type[BaseConfig]) -> list[dict[str, Any]]:
    """Every key of a config model with its type, default, allowed values and comment (for ``suite show``).

    A key without a default (a private method's ``epsilon``) has the default ``"required"``.
    """
    docs = _field_comments(model)
    rows = []
    for name, info in model.model_fields.items():
        rows.append({
            "key": name,
            "type": _type_name(info.annotation),
            "default": "required" if info.is_required() else info.default,
            "allowed": _allowed(info),
            "doc": docs.get(name, ""),
        })
    return rows


def _type_name(annotation: Any) -> str:
    import typing

    if typing.get_origin(annotation) is typing.Literal:
        return "choice"
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args:
        inner = " | ".join(_type_name(a) for a in args)
        return inner + (" | null" if len(args) < len(typing.get_args(annotation)) else "")
    return getattr(annotation, "__name__", str(annotation))


def _allowed(info: Any) -> str:
    import typing

    def literals(annotation: Any) -> list[Any]:
        if typing.get_origin(annotation) is typing.Literal:
            return list(typing.get_args(annotation))
        return [v for a in typing.get_args(annotation) for v in literals(a)]

    choices = literals(info.annotation)
    if choices:
        return ", ".join(str(c) for c in choices)
    bounds = []
    for meta in info.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{sign} {getattr(meta, attr)}")
    return ", ".join(bounds)


def _field_comments(model: type[BaseConfig]) -> dict[str, str]:
    """The trailing ``# comment`` of each field line in the model's (and its bases' and mixins') source."""
    import inspect
    import re

    pattern = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$")
    out: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            lines = inspect.getsource(cls).splitlines()
        except (OSError, TypeError):
            continue
        for line in lines:
            match = pattern.match(line)
            if match:
                out[match.group(1)] = match.group(2).strip()
    return out
