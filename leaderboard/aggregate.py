"""Runs -> one table per (task, tier, task version): a row per configuration, aggregated over seeds.

A configuration is the resolved config without its seed (the params minus ``seed``). Only
FINISHED runs enter an aggregate, and of several FINISHED runs of one config hash (a
``--force`` rerun) only the newest. Every metric gets mean, standard deviation, count and
the half-width of a 95% Student-t confidence interval. Privacy metrics are split by the
run's ``privacy.unit``: ``privacy/epsilon [example]`` and ``privacy/epsilon [label]`` are
different columns, never ranked together, and a run with unit ``none`` has no privacy values.

>>> sections = build_sections(runs, schemas)   # doctest: +SKIP
>>> sections[0].table[["method", "utility/accuracy mean", "utility/accuracy ci95"]]   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import pandas as pd

from leaderboard.privacy import AUDIT, CLAIM, add_spread, add_spread_ends, beside_claim, spec_of
from leaderboard.schema import TaskSchema, axis_of
from suite.config import canonical_json
from suite.schema import AXES

_TIER_ORDER = {"quick": 0, "full": 1}
STATS = ("mean", "ci95", "std", "n")


@dataclass(frozen=True)
class Column:
    """One metric column of a table; privacy columns carry their unit of privacy."""

    key: str  # column name in the tables: "utility/accuracy", "privacy/epsilon [example]"
    metric: str  # the MLflow metric key
    direction: str  # higher, lower or none
    unit: str
    description: str
    privacy_unit: str | None = None

    @property
    def axis(self) -> str:
        return axis_of(self.metric)

    @property
    def label(self) -> str:
        name = self.metric.split("/", 1)[-1]
        return f"{name} [{self.privacy_unit}]" if self.privacy_unit else name


@dataclass
class Section:
    """One task, tier and task version: its configurations aggregated over seeds."""

    task: str
    tier: str
    version: str
    schema: TaskSchema
    columns: list[Column]
    settings: list[str]  # config keys shown beside the method: those that vary within a method
    table: pd.DataFrame  # one row per configuration with at least one FINISHED run
    runs: pd.DataFrame  # every run of the section, with ``config_id`` and ``used``
    configs: pd.DataFrame  # one row per configuration, finished or not
    best: dict[str, set[str]] = field(default_factory=dict)  # column key -> config ids holding its best mean
    ties: dict[str, set[str]] = field(default_factory=dict)  # column key -> config ids tied at the top (ties.py)
    mark_notes: dict[str, str] = field(default_factory=dict)  # column key -> why best or tie (the paired test)
    headline_marks: dict[str, tuple[bool, str]] = field(default_factory=dict)  # level -> (best is significant, why)

    @property
    def slug(self) -> str:
        return f"{self.tier}-v{self.version}"


def build_sections(runs: pd.DataFrame, schemas: dict[tuple[str, str], TaskSchema]) -> list[Section]:
    """Every (task, tier, task version) of ``runs`` as a :class:`Section`, in a stable order."""
    if runs.empty:
        return []
    keys = sorted({(r.task, r.tier, r.task_version) for r in runs[["task", "tier", "task_version"]].itertuples()},
                  key=lambda k: (k[0], _TIER_ORDER.get(k[1], 9), k[1], [-n for n in _version_key(k[2])]))
    out = []
    for task, tier, version in keys:
        part = runs[(runs["task"] == task) & (runs["tier"] == tier) & (runs["task_version"] == version)]
        schema = schemas.get((task, version)) or TaskSchema(task, version)
        out.append(_section(task, tier, version, schema, part))
    return out


def _section(task: str, tier: str, version: str, schema: TaskSchema, runs: pd.DataFrame) -> Section:
    empty = [c for c in runs if c.startswith(("params.", "metrics.")) and runs[c].isna().all()]
    runs = runs.drop(columns=empty)  # keys of other task versions, metrics of other tasks
    params = [c for c in runs if c.startswith("params.") and c != "params.seed"]
    runs[params] = runs[params].fillna("")
    runs["config_id"] = [config_id(task, tier, version, dict(zip(params, values)))
                         for values in runs[params].itertuples(index=False)]
    runs["used"] = _used(runs)
    runs = add_spread(_split_privacy(runs, schema))
    runs["audit_contradicts"] = audit_contradicts(runs)
    columns = _columns(runs, schema)
    configs = _configs(runs, params)
    settings = _settings(configs, params)
    table = add_spread_ends(_aggregate(runs[runs["used"]], configs, columns), runs[runs["used"]])
    section = Section(task, tier, version, schema, columns, settings, table, runs, configs)
    section.best = best_per_column(table, columns)
    return section


def config_id(task: str, tier: str, version: str, params: dict[str, str]) -> str:
    """Short stable id of a configuration (task, tier, version, config without seed): its page's name."""
    payload = canonical_json({"task": task, "tier": tier, "version": version, "params": params})
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _used(runs: pd.DataFrame) -> pd.Series:
    """FINISHED runs that enter the aggregates: the newest per config hash (one per seed)."""
    finished = runs[runs["status"] == "FINISHED"].sort_values(["start_time", "run_id"], ascending=False)
    newest = set(finished.drop_duplicates("config_hash")["run_id"])
    return runs["run_id"].isin(newest)


def _split_privacy(runs: pd.DataFrame, schema: TaskSchema) -> pd.DataFrame:
    """``metrics.privacy/x`` -> one column per unit of privacy; runs of unit ``none`` get none.

    A metric declared with ``per_privacy_unit=False`` (a measurement of the model, such as the
    exposure of planted canaries) stays one column with every run's value.
    """
    units = sorted(set(runs["privacy_unit"]) - {"none", ""})
    for column in [c for c in runs if c.startswith("metrics.privacy/")]:
        if not schema.spec(column.removeprefix("metrics.")).per_privacy_unit:
            continue
        for unit in units:
            runs[f"{column} [{unit}]"] = runs[column].where(runs["privacy_unit"] == unit)
        runs = runs.drop(columns=column)
    return runs


def audit_contradicts(runs: pd.DataFrame) -> pd.Series:
    """Per run: does its audit's epsilon lower bound (95% confidence) exceed the epsilon it claims?

    Both are compared within one unit of privacy; a run without either value is not contradicted.
    """
    out = pd.Series(False, index=runs.index)
    for column in [c for c in runs if c.startswith(f"metrics.{AUDIT} [")]:
        claim = column.replace(AUDIT, CLAIM)
        if claim in runs:
            out |= (runs[column] > runs[claim]).fillna(False).astype(bool)
    return out


def _columns(runs: pd.DataFrame, schema: TaskSchema) -> list[Column]:
    used = runs[runs["used"]]
    present = [c.removeprefix("metrics.") for c in runs if c.startswith("metrics.") and used[c].notna().any()]
    pareto = [k for pair in schema.pareto for k in pair]
    out = []
    for key in present:
        metric, _, unit = key.partition(" [")
        spec = spec_of(metric, schema.spec(metric))
        out.append(Column(key, metric, spec.direction, spec.unit, spec.description, unit.rstrip("]") or None))

    def order(col: Column) -> tuple:
        axis = AXES.index(col.axis) if col.axis in AXES else len(AXES)
        beside = beside_claim(col.metric)  # the spread, the accountants and the audit's bound follow the claim
        metric = CLAIM if beside is not None else col.metric
        first = pareto.index(metric) if metric in pareto else len(pareto)
        return axis, first, metric, col.privacy_unit or "", beside or 0

    return sorted(out, key=order)


def _configs(runs: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    """One row per configuration: id, method, params, privacy unit, run counts by status."""
    first = runs.drop_duplicates("config_id").set_index("config_id")
    counts = runs.groupby("config_id")["status"].value_counts().unstack(fill_value=0)
    configs = first[["method", "privacy_unit", *params]].copy()
    configs["seeds"] = runs[runs["used"]].groupby("config_id").size().reindex(configs.index, fill_value=0)
    for status in ("FINISHED", "FAILED", "KILLED"):
        configs[status.lower()] = counts[status].reindex(configs.index, fill_value=0) if status in counts else 0
    used = runs[runs["used"]]
    configs["contradicted"] = used.groupby("config_id")["audit_contradicts"].sum().reindex(
        configs.index, fill_value=0).astype(int)
    configs = configs.reset_index()
    keys = ["method", *_key_order(params)]
    order = sorted(range(len(configs)), key=lambda i: [_natural(configs.loc[i, k]) for k in keys])
    return configs.iloc[order].reset_index(drop=True)


def _key_order(params: list[str]) -> list[str]:
    """The config keys every task shares (epsilon, delta) first, then the task's own, by name."""
    common = [f"params.{k}" for k in ("epsilon", "delta") if f"params.{k}" in params]
    return common + sorted(p for p in params if p not in common and p != "params.method")


def _settings(configs: pd.DataFrame, params: list[str]) -> list[str]:
    """Config keys that take more than one value within some method (the others follow the method)."""
    keys = [p for p in _key_order(params) if (configs.groupby("method")[p].nunique() > 1).any()]
    return [k.removeprefix("params.") for k in keys]


def _aggregate(used: pd.DataFrame, configs: pd.DataFrame, columns: list[Column]) -> pd.DataFrame:
    """Mean, 95% CI half-width, std and count of every column per configuration with finished runs."""
    from scipy.special import stdtrit  # Student t quantile, stdtrit(df, p) == scipy.stats.t.ppf(p, df)

    table = configs[configs["seeds"] > 0].reset_index(drop=True)
    grouped = used.groupby("config_id")
    stats = {}
    for col in columns:
        values = grouped[f"metrics.{col.key}"]
        n = values.count().reindex(table["config_id"])
        std = values.std(ddof=1).reindex(table["config_id"])
        half = stdtrit((n - 1).clip(lower=1), 0.975) * std / n.pow(0.5)
        stats[f"{col.key} mean"] = values.mean().reindex(table["config_id"]).to_numpy()
        stats[f"{col.key} ci95"] = half.where(n > 1).to_numpy()
        stats[f"{col.key} std"] = std.where(n > 1).to_numpy()
        stats[f"{col.key} n"] = n.to_numpy()
    return pd.concat([table, pd.DataFrame(stats)], axis=1)


def best_per_column(table: pd.DataFrame, columns: list[Column]) -> dict[str, set[str]]:
    """Column key -> the config ids whose mean is best by the metric's direction (ties share it)."""
    out: dict[str, set[str]] = {}
    for col in columns:
        if col.direction not in ("higher", "lower"):
            continue
        means = table[f"{col.key} mean"].dropna()
        if means.empty:
            continue
        best = means.max() if col.direction == "higher" else means.min()
        if (means == best).all():
            continue  # one value, or every configuration ties: nothing to mark
        out[col.key] = set(table.loc[means.index[means == best], "config_id"])
    return out


def row_label(row: pd.Series, settings: list[str]) -> str:
    """``dpsgd epsilon=3 grad_sample_mode=ghost``: the method and its shown settings that are set."""
    parts = [str(row["method"])]
    parts += [f"{k}={row[f'params.{k}']}" for k in settings if row.get(f"params.{k}") not in ("", "null", None)]
    return " ".join(parts)


def _natural(value: object) -> tuple:
    """Sort key: missing first, then numbers by value, then text."""
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    if text in ("", "null"):
        return (0, 0.0, "")
    try:
        return (1, float(text), "")
    except ValueError:
        return (2, 0.0, text)


def _version_key(version: str) -> list[int]:
    return [int(p) if p.isdigit() else 0 for p in version.split(".")]
