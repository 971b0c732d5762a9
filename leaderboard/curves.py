"""Curves a task declares (``Task.curves``), drawn as SVG: one line per configuration of a table.

A curve names an x value and a metric key for each of its points, e.g. exposure at 0, 1, 4, 16
and 64 repetitions of a canary. Each configuration (a table row: mean over seeds) becomes one line
through the points it has, with 95% confidence intervals as error bars; a configuration with fewer
than two of the points is left out. The declaration comes from the runs' ``result.json``
(:class:`~leaderboard.schema.CurveSpec`); the board never imports the task.

Like the Pareto plots, the SVG is byte-for-byte reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from leaderboard.aggregate import Column, Section, row_label
from leaderboard.plots import _RC, _colours, _slug
from leaderboard.schema import CurveSpec

_MARKERS = "osD^vP*Xh<>"


@dataclass(frozen=True)
class CurvePlot:
    """One SVG file: a declared curve over a table's configurations."""

    filename: str
    title: str
    description: str


def curve_plots(section: Section, out_dir: Path) -> list[CurvePlot]:
    """Draw every curve of the section's task that has data into ``out_dir``; return them."""
    plots = []
    for curve in section.schema.curves:
        lines = _lines(section, curve)
        if not lines:
            continue
        name = _slug(f"{section.task}-{section.slug}-curve-{curve.name}") + ".svg"
        _draw(section, curve, lines, out_dir / name)
        plots.append(CurvePlot(name, curve.title, curve.description))
    return plots


def _lines(section: Section, curve: CurveSpec) -> dict[int, list[tuple[float, float, float | None]]]:
    """Table row -> its (x, mean, CI half-width) points, for rows with at least two points."""
    out = {}
    for i, row in section.table.iterrows():
        points = []
        for x, key in curve.points:
            value = _value(row, [c for c in section.columns if c.metric == key])
            if value is not None:
                points.append((x, *value))
        if len(points) >= 2:
            out[i] = points
    return out


def _value(row: pd.Series, columns: list[Column]) -> tuple[float, float | None] | None:
    """Mean and CI of the first of a metric's columns (one per unit of privacy) the row has."""
    for col in columns:
        mean = row[f"{col.key} mean"]
        if not pd.isna(mean):
            half = row[f"{col.key} ci95"]
            return float(mean), None if pd.isna(half) or not math.isfinite(half) else float(half)
    return None


def _draw(section: Section, curve: CurveSpec, lines: dict[int, list], path: Path) -> None:
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(_RC):
        fig = Figure(figsize=(6.4, 4.4))
        ax = fig.subplots()
        colours = _colours(len(section.table))  # by table row, as in the Pareto plots
        methods = sorted(set(section.table["method"]))
        for i, points in lines.items():
            row = section.table.loc[i]
            xs, ys, errs = zip(*points)
            yerr = [e if e is not None else 0.0 for e in errs]
            marker = _MARKERS[methods.index(row["method"]) % len(_MARKERS)]
            ax.errorbar(xs, ys, yerr=yerr if any(yerr) else None, fmt=f"-{marker}", ms=5, lw=1.3, capsize=3,
                        color=colours[i], label=row_label(row, section.settings))
        for y, label in curve.guides:
            ax.axhline(y, ls=":", lw=1.2, color="0.35", label=label)
        if curve.x_scale == "symlog":
            ax.set_xscale("symlog", linthresh=1.0)
        elif curve.x_scale == "log":
            ax.set_xscale("log")
        ticks = sorted({x for points in lines.values() for x, _, _ in points})  # the x values with data
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.set_xlim(*_x_limits(ticks, curve.x_scale))  # guides span the axes: keep them from widening it
        ax.minorticks_off()
        ax.set_xlabel(curve.x_label)
        ax.set_ylabel(curve.y_label)
        ax.set_title(f"{section.task} ({section.tier}): {curve.title}", fontsize=11)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.16), frameon=False, ncol=2)
        fig.savefig(path, format="svg", bbox_inches="tight", metadata={"Date": None})


def _x_limits(xs: list[float], scale: str) -> tuple[float, float]:
    """The data's x range with a margin that looks the same on the curve's scale."""
    lo, hi = xs[0], xs[-1]
    if scale == "linear" or lo == hi:
        pad = 0.05 * (hi - lo) or 0.5
        return lo - pad, hi + pad
    return (lo - 0.3 if lo <= 0 else lo / 1.3), hi * 1.3
