"""Pareto plots of a table as SVG: the pairs its task declares, e.g. accuracy vs epsilon.

Points are configurations (means over seeds) with 95% confidence intervals as error bars.
The front (points no other point beats on both axes) is joined by a line; dominated points
are drawn hollow and light. A privacy axis holds one unit of privacy only: a task with
example-level and label-level rows gets one plot per unit. Non-private configurations,
which have no epsilon, are drawn as dashed horizontal lines on plots over a privacy axis. Over the
claimed epsilon, a light band behind each point spans its accountants' smallest to largest epsilon.
A metric the board never ranks (a data-dependent epsilon, a single accountant's) is never an axis.

The SVG is byte-for-byte reproducible: a fixed hash salt for element ids and no date.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from leaderboard.aggregate import Column, Section, row_label
from leaderboard.privacy import CLAIM, NEVER_RANKED, SPREAD
from leaderboard.summary import pareto_front

_RC = {"svg.hashsalt": "leaderboard", "svg.fonttype": "path", "font.size": 10, "axes.grid": True,
       "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False}
_ARROW = {"higher": "higher is better", "lower": "lower is better"}


@dataclass(frozen=True)
class Plot:
    """One SVG file: y against x over a table's configurations."""

    filename: str
    x: Column
    y: Column

    @property
    def title(self) -> str:
        return f"{self.y.label} vs {self.x.label}"


def pareto_plots(section: Section, out_dir: Path) -> list[Plot]:
    """Draw every Pareto pair of the section's task that has data into ``out_dir``; return them."""
    plots = []
    for x, y in _axis_pairs(section):
        rows = section.table[section.table[f"{x.key} mean"].notna() & section.table[f"{y.key} mean"].notna()]
        if rows.empty:
            continue
        name = _slug(f"{section.task}-{section.slug}-{y.label}-vs-{x.label}") + ".svg"
        references = _references(section, x, y)
        _draw(section, rows, references, x, y, out_dir / name)
        plots.append(Plot(name, x, y))
    return plots


def _axis_pairs(section: Section) -> list[tuple[Column, Column]]:
    """Columns for each declared (x, y) pair; a privacy metric yields one pair per unit of privacy."""
    out = []
    for x_metric, y_metric in section.schema.pareto:
        if x_metric in NEVER_RANKED or y_metric in NEVER_RANKED:
            continue
        for x in [c for c in section.columns if c.metric == x_metric]:
            for y in [c for c in section.columns if c.metric == y_metric]:
                if x.privacy_unit and y.privacy_unit and x.privacy_unit != y.privacy_unit:
                    continue  # never two units of privacy in one plot
                out.append((x, y))
    return out


def _references(section: Section, x: Column, y: Column) -> pd.DataFrame:
    """Non-private rows, drawn as lines on a plot whose x axis is a privacy metric."""
    table = section.table
    if x.privacy_unit is None or y.privacy_unit is not None:
        return table.iloc[0:0]
    return table[(table["privacy_unit"] == "none") & table[f"{y.key} mean"].notna()]


def _draw(section: Section, rows: pd.DataFrame, references: pd.DataFrame, x: Column, y: Column, path: Path) -> None:
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(_RC):
        fig = Figure(figsize=(6.4, 4.0))
        ax = fig.subplots()
        xs, ys = rows[f"{x.key} mean"].tolist(), rows[f"{y.key} mean"].tolist()
        front = pareto_front(xs, ys, x_direction=x.direction, y_direction=y.direction)
        colours = _colours(len(section.table))  # by table row: a configuration has one colour in every plot
        for i, on_front in zip(rows.index, front):
            _spread_band(ax, rows.loc[i], x, y, colours[i])
            _point(ax, rows.loc[i], x, y, colours[i], on_front, row_label(rows.loc[i], section.settings))
        ordered = sorted((a, b) for a, b, f in zip(xs, ys, front) if f)
        if len(ordered) > 1:
            ax.plot(*zip(*ordered), "-", color="0.3", lw=1.2, zorder=1, label="Pareto front")
        for i in references.index:
            label = row_label(references.loc[i], section.settings) + " (no privacy)"
            ax.axhline(references.loc[i, f"{y.key} mean"], ls="--", lw=1, color=colours[i], label=label)
        if min(xs) > 0 and max(xs) / min(xs) > 30:
            ax.set_xscale("log")
        ax.set_xlabel(_axis_label(x))
        ax.set_ylabel(_axis_label(y))
        ax.set_title(f"{section.task} ({section.tier}): {y.label} vs {x.label}", fontsize=11)
        ax.legend(fontsize=8.5, loc="upper left", bbox_to_anchor=(0.0, -0.16), frameon=False, ncol=1)
        fig.savefig(path, format="svg", bbox_inches="tight", metadata={"Date": None})


def _point(ax, row: pd.Series, x: Column, y: Column, colour: tuple, on_front: bool, label: str) -> None:  # noqa: ANN001
    xerr, yerr = _err(row[f"{x.key} ci95"]), _err(row[f"{y.key} ci95"])
    ax.errorbar(row[f"{x.key} mean"], row[f"{y.key} mean"], xerr=xerr, yerr=yerr, fmt="o", ms=6, capsize=3,
                color=colour, mfc=colour if on_front else "white", alpha=1.0 if on_front else 0.45,
                zorder=3 if on_front else 2, label=label + ("" if on_front else " (dominated)"))


def _spread_band(ax, row: pd.Series, x: Column, y: Column, colour: tuple) -> None:  # noqa: ANN001
    """The accountants' range of the claimed epsilon, as a wide translucent bar behind the point."""
    if x.metric != CLAIM:
        return
    spread = x.key.replace(CLAIM, SPREAD, 1)
    lo, hi = row.get(f"{spread} lo"), row.get(f"{spread} hi")
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return
    ax.hlines(row[f"{y.key} mean"], lo, hi, colors=[colour], linewidths=7, alpha=0.25, zorder=1)


def _err(half_width: float) -> float | None:
    return None if half_width is None or not math.isfinite(half_width) else float(half_width)


def _axis_label(col: Column) -> str:
    unit = f" [{col.unit}]" if col.unit and col.unit != col.metric.split("/", 1)[-1] else ""
    arrow = f" ({_ARROW[col.direction]})" if col.direction in _ARROW else ""
    return f"{col.label}{unit}{arrow}"


def _colours(n: int) -> list[tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
