"""Pareto fronts and the headline of a table: what is best at each privacy or cost level.

>>> pareto_front([1, 2, 3], [0.5, 0.9, 0.8], x_direction="lower", y_direction="higher")
[True, True, False]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from leaderboard.aggregate import Column, Section, row_label

_MAX_COST_LEVELS = 5


def pareto_front(xs: Sequence[float], ys: Sequence[float], *, x_direction: str, y_direction: str) -> list[bool]:
    """Which points no other point dominates (as good on both axes, better on one).

    An axis whose direction is ``none`` does not rank: only the other axis counts then.
    """
    sx = {"higher": -1.0, "lower": 1.0}.get(x_direction, 0.0)  # signs that turn both axes into "lower is better"
    sy = {"higher": -1.0, "lower": 1.0}.get(y_direction, 0.0)
    points = [(sx * x, sy * y) for x, y in zip(xs, ys)]

    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])

    return [not any(dominates(q, p) for q in points) for p in points]


@dataclass(frozen=True)
class Headline:
    """The best configuration at one level (a privacy budget, non-private, or a cost)."""

    level: str
    label: str
    config_id: str
    metric: Column
    mean: float
    ci95: float
    runner_up: str | None = None  # config id of the next best mean at this level, if any


def utility_column(section: Section) -> Column | None:
    """The utility metric a table is ranked by: the first ranked utility column (Pareto y first)."""
    ranked = [c for c in section.columns if c.axis == "utility" and c.direction != "none"]
    return ranked[0] if ranked else None


def headlines(section: Section) -> list[Headline]:
    """Best configuration per privacy level when the task has private rows, else per cost level."""
    metric = utility_column(section)
    table = section.table
    if metric is None or table.empty:
        return []
    table = table[table[f"{metric.key} mean"].notna()]
    if (table["privacy_unit"] != "none").any():
        return _by_privacy_level(section, table, metric)
    return _by_cost(section, table, metric)


def _by_privacy_level(section: Section, table: pd.DataFrame, metric: Column) -> list[Headline]:
    target = table["params.epsilon"] if "params.epsilon" in table else pd.Series("", index=table.index)
    levels: dict[tuple, list[int]] = {}
    for i, unit, eps in zip(table.index, table["privacy_unit"], target):
        if unit == "none":
            key = (1, "", math.inf, "non-private")
        else:
            value = _number(eps)
            name = f"ε = {eps} [{unit}]" if value is not None else f"private [{unit}]"
            key = (0, unit, value if value is not None else math.inf, name)
        levels.setdefault(key, []).append(i)
    return [_best(section, table.loc[rows], metric, key[3]) for key, rows in sorted(levels.items())]


def _by_cost(section: Section, table: pd.DataFrame, metric: Column) -> list[Headline]:
    """The Pareto front of the first (cost, utility) pair, cheapest first; else best and cheapest."""
    for x_metric, y_metric in section.schema.pareto:
        x = next((c for c in section.columns if c.metric == x_metric and c.axis in ("compute", "bandwidth")), None)
        if x is None or y_metric != metric.metric or x.direction == "none":
            continue
        rows = table[table[f"{x.key} mean"].notna()]
        front = pareto_front(rows[f"{x.key} mean"], rows[f"{metric.key} mean"], x_direction=x.direction,
                             y_direction=metric.direction)
        rows = rows[front].sort_values(f"{x.key} mean", ascending=x.direction == "lower", kind="stable")
        if not rows.empty:
            return [_best(section, rows.loc[[i]], metric, f"{x.label} = {_short(rows.loc[i, f'{x.key} mean'])}"
                          f" {x.unit}".rstrip()) for i in rows.index[:_MAX_COST_LEVELS]]
    out = [_best(section, table, metric, "best")]
    wall = next((c for c in section.columns if c.metric == "compute/wall_s"), None)
    if wall is not None and table[f"{wall.key} mean"].notna().any():
        cheapest = table[f"{wall.key} mean"].idxmin()
        out.append(_best(section, table.loc[[cheapest]], metric, "fastest"))
    return out


def _best(section: Section, rows: pd.DataFrame, metric: Column, level: str) -> Headline:
    means = rows[f"{metric.key} mean"]
    i = means.idxmax() if metric.direction == "higher" else means.idxmin()
    row = rows.loc[i]
    rest = means.drop(i)
    runner = (rest.idxmax() if metric.direction == "higher" else rest.idxmin()) if len(rest) else None
    return Headline(level, row_label(row, section.settings), str(row["config_id"]), metric,
                    float(row[f"{metric.key} mean"]), float(row[f"{metric.key} ci95"]),
                    None if runner is None else str(rows.loc[runner, "config_id"]))


def _number(text: object) -> float | None:
    try:
        value = float(str(text))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _short(value: float) -> str:
    return f"{value:.3g}"
