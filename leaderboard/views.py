"""Sections -> plain dicts and lists the templates render (formatting lives here, not in templates)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from leaderboard.aggregate import AUDIT, CLAIM, Column, Section, row_label
from leaderboard.privacy import ACCOUNTANTS, SPREAD
from leaderboard.summary import headlines

_ARROWS = {"higher": "↑", "lower": "↓"}
_SI = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def fmt(value: Any) -> str:
    """A number for people: 4 significant digits (whole numbers from 1000), SI prefixes from 100k up,
    missing as an em dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or pd.isna(value):
        return "—"
    value = float(value)
    if abs(value) >= 1e5:
        scale, prefix = next((s, p) for s, p in _SI if abs(value) >= s)
        return f"{value / scale:.3g} {prefix}"
    if abs(value) >= 1e3:
        return f"{value:.0f}"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4g}"


def fmt_ci(value: Any) -> str:
    """A confidence half-width: 2 significant digits; empty when missing or zero (identical seeds)."""
    if value is None or pd.isna(value) or float(value) == 0.0:
        return ""
    return fmt(float(f"{float(value):.2g}"))


def exact(value: Any) -> str:
    """The value a sort uses and a test reads: shortest round-trip repr, empty when missing."""
    if value is None or pd.isna(value):
        return ""
    return repr(float(value))


def when(start: Any) -> str:
    return "" if start is None or pd.isna(start) else pd.Timestamp(start).strftime("%Y-%m-%d %H:%M:%S UTC")


def date_range(starts: pd.Series) -> str:
    """``2026-11-27 18:19–18:22 UTC`` or ``2026-11-20 – 2026-11-27``: when a task's runs started."""
    starts = starts.dropna()
    if starts.empty:
        return "unknown"
    first, last = pd.Timestamp(starts.min()), pd.Timestamp(starts.max())
    if f"{first:%Y-%m-%d %H:%M}" == f"{last:%Y-%m-%d %H:%M}":
        return f"{first:%Y-%m-%d %H:%M} UTC"
    if first.date() == last.date():
        return f"{first:%Y-%m-%d %H:%M}–{last:%H:%M} UTC"
    return f"{first:%Y-%m-%d} – {last:%Y-%m-%d}"


def column_header(col: Column) -> dict[str, str]:
    direction = {"higher": "higher is better", "lower": "lower is better"}.get(col.direction, "not ranked")
    privacy = f"; unit of privacy: {col.privacy_unit}" if col.privacy_unit else ""
    return {"label": col.label, "unit": col.unit, "arrow": _ARROWS.get(col.direction, ""), "key": col.key,
            "title": f"{col.metric}: {col.description or 'no description'} ({direction}{privacy})",
            "axis": col.axis, "type": "num"}


def table_columns(section: Section) -> list[Column]:
    """The columns of the family table: all but the per-accountant epsilons, which the spread column
    sums up (its cell's title lists them; the configuration page and the downloads keep them)."""
    return [c for c in section.columns if c.metric not in ACCOUNTANTS]


def table_view(section: Section, root: str = "") -> dict[str, Any]:
    """Headers grouped by axis, and one row per configuration with mean, CI and the best marked."""
    config_headers = [_plain_header("method", "text", "the method compared (config key method)")]
    for key in section.settings:
        values = section.table[f"params.{key}"] if len(section.table) else pd.Series(dtype=str)
        kind = "num" if all(_is_number(v) for v in values) else "text"
        config_headers.append(_plain_header(key, kind, f"config key {key}"))
    config_headers.append(_plain_header("seeds", "num", "FINISHED runs aggregated (one per seed)"))
    groups = [{"label": "configuration", "span": len(config_headers), "axis": "config"}]
    for col in table_columns(section):
        if groups[-1]["axis"] != col.axis:
            groups.append({"label": col.axis, "span": 0, "axis": col.axis})
        groups[-1]["span"] += 1
    rows = [_row(section, row, root) for _, row in section.table.iterrows()]
    headers = config_headers + [column_header(c) for c in table_columns(section)]
    return {"groups": groups, "headers": headers, "rows": rows}


def _plain_header(label: str, kind: str, title: str) -> dict[str, str]:
    return {"label": label, "type": kind, "title": title, "unit": "", "arrow": "", "key": "", "axis": ""}


def _row(section: Section, row: pd.Series, root: str) -> dict[str, Any]:
    cells = [{"kind": "config", "text": str(row["method"]), "value": str(row["method"]),
              "href": f"{root}config/{row['config_id']}.html"}]
    for key in section.settings:
        value = row[f"params.{key}"]
        cells.append({"kind": "setting", "text": "—" if value in ("", "null") else str(value),
                      "value": "" if value in ("", "null") else str(value)})
    cells.append({"kind": "setting", "text": str(int(row["seeds"])), "value": str(int(row["seeds"]))})
    contradicted = int(row.get("contradicted", 0))
    for col in table_columns(section):
        mean, half, n = row[f"{col.key} mean"], row[f"{col.key} ci95"], row[f"{col.key} n"]
        flag = contradicted > 0 and col.metric in (CLAIM, AUDIT) and not pd.isna(mean)
        best = row["config_id"] in section.best.get(col.key, set())
        tie = row["config_id"] in section.ties.get(col.key, set())
        cell = {"kind": "metric", "text": fmt(mean), "value": exact(mean), "ci": fmt_ci(half),
                "n": int(n) if not pd.isna(n) else 0, "best": best, "tie": tie,
                "mark_note": section.mark_notes.get(col.key, "") if best or tie else "",
                "metric": col.key, "contradicted": flag, "title": ""}
        if col.metric == SPREAD and not pd.isna(mean):
            cell.update(text=spread_text(row[f"{col.key} lo"], row[f"{col.key} hi"]), ci="",
                        title=accountants_title(section, row, col))
        cells.append(cell)
    problems = int(row["failed"]) + int(row["killed"])
    return {"config_id": row["config_id"], "cells": cells, "label": row_label(row, section.settings),
            "problems": problems, "contradicted": contradicted, "audit_note": audit_note(contradicted, row["seeds"])}


def spread_text(low: Any, high: Any) -> str:
    """``2.70–3.00``: the smallest and largest epsilon over the accountants."""
    return f"{fmt(low)}–{fmt(high)}"


def accountants_title(section: Section, row: pd.Series, spread: Column) -> str:
    """``rdp 3.00 · prv 2.71 · pld 2.70 (means over seeds)``: each accountant behind a spread cell."""
    unit = f" [{spread.privacy_unit}]" if spread.privacy_unit else ""
    parts = [f"{name} {fmt(row.get(f'{metric}{unit} mean'))}" for metric, name in ACCOUNTANTS.items()
             if not pd.isna(row.get(f"{metric}{unit} mean", float("nan")))]
    return f"epsilon under each accountant: {' · '.join(parts)} (means over seeds)"


def audit_note(contradicted: int, seeds: Any) -> str:
    """The flag of a claim the audit contradicts: in how many of the aggregated runs."""
    if not contradicted:
        return ""
    return (f"claim contradicted: in {contradicted} of {int(seeds)} runs the audit's 95% lower bound on epsilon "
            "exceeds the epsilon claimed")


def headline_view(section: Section, root: str = "") -> list[dict[str, str]]:
    labels = {r["config_id"]: row_label(r, section.settings) for _, r in section.configs.iterrows()}
    out = []
    for h in headlines(section):
        ci = f" ± {fmt_ci(h.ci95)}" if fmt_ci(h.ci95) else ""
        significant, note = section.headline_marks.get(h.level, (True, ""))
        tie = "" if significant or h.runner_up is None else labels.get(h.runner_up, h.runner_up)
        out.append({"level": h.level, "label": h.label, "href": f"{root}config/{h.config_id}.html",
                    "value": f"{fmt(h.mean)}{ci}", "metric": f"{h.metric.label} {_ARROWS.get(h.metric.direction, '')}"
                    .rstrip() + (f" [{h.metric.unit}]" if h.metric.unit else ""),
                    "tie": tie, "tie_href": f"{root}config/{h.runner_up}.html" if tie else "", "note": note})
    return out


def failures_view(section: Section, root: str = "") -> list[dict[str, str]]:
    """FAILED and KILLED runs of a section, newest first, with the first line of their reason."""
    failed = section.runs[section.runs["status"].isin(["FAILED", "KILLED"])]
    failed = failed.sort_values(["start_time", "run_id"], ascending=False)
    labels = {r["config_id"]: row_label(r, section.settings) for _, r in section.configs.iterrows()}
    return [{"status": r.status, "run_id": r.run_id, "seed": _seed(r.seed), "started": when(r.start_time),
             "reason": (r.failure_reason or "no reason recorded").strip().splitlines()[0][:300],
             "label": labels.get(r.config_id, r.method), "href": f"{root}config/{r.config_id}.html"}
            for r in failed.itertuples()]


def task_counts(runs: pd.DataFrame) -> dict[str, Any]:
    """Runs by status, the seeds that finished, and when the runs started."""
    finished = runs[runs["status"] == "FINISHED"]
    seeds = sorted({int(s) for s in finished["seed"].dropna()})
    return {"runs": len(runs), "finished": len(finished), "failed": int((runs["status"] == "FAILED").sum()),
            "killed": int((runs["status"] == "KILLED").sum()), "seeds": seeds,
            "seed_text": ", ".join(map(str, seeds)) or "none", "dates": date_range(runs["start_time"])}


def _seed(seed: Any) -> str:
    return "" if seed is None or pd.isna(seed) else str(int(seed))


def _is_number(value: Any) -> bool:
    if value in ("", "null", None):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
