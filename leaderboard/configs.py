"""The view of one configuration's page: its resolved config, aggregates, and every run of it."""

from __future__ import annotations

from typing import Any

import pandas as pd

from leaderboard.aggregate import AUDIT, CLAIM, Section, row_label
from leaderboard.privacy import SPREAD
from leaderboard.views import accountants_title, audit_note, column_header, exact, fmt, spread_text, when

_ENV = (("python", "env_python"), ("torch", "env_torch"), ("cpu", "env_cpu"), ("threads", "env_threads"))


def config_view(section: Section, config: pd.Series) -> dict[str, Any]:
    """Everything the page of configuration ``config`` (a row of ``section.configs``) shows."""
    config_id = config["config_id"]
    runs = section.runs[section.runs["config_id"] == config_id]
    finished = runs[runs["status"] == "FINISHED"].sort_values(["seed", "start_time", "run_id"], kind="stable")
    failed = runs[runs["status"] != "FINISHED"].sort_values(["start_time", "run_id"], ascending=False)
    params = [(c.removeprefix("params."), config[c]) for c in config.index if c.startswith("params.")]
    return {
        "config_id": config_id,
        "label": row_label(config, section.settings),
        "task": section.task, "tier": section.tier, "version": section.version,
        "privacy_unit": config["privacy_unit"],
        "accountants": ", ".join(sorted(set(runs["accountant"]) - {""})) or "none",
        "samplers": ", ".join(sorted(set(runs["sampler"]) - {""})) or "none",
        "params": [(k, "null" if v == "" else v) for k, v in sorted(params)],
        "seeds": ", ".join(str(int(s)) for s in sorted(set(finished["seed"].dropna()))) or "none",
        "aggregates": _aggregates(section, config_id),
        "runs": [_run(r) for _, r in finished.iterrows()],
        "per_run": _per_run(section, finished),
        "failed": [_failure(r) for _, r in failed.iterrows()],
        "audit": _audit(finished[finished["used"]]),
    }


def _audit(used: pd.DataFrame) -> dict[str, Any]:
    """Each aggregated run's claimed epsilon and audit bound, and the runs whose claim the audit contradicts."""
    pairs = [(c, c.replace(AUDIT, CLAIM)) for c in used if c.startswith(f"metrics.{AUDIT} [")]
    rows = []
    for lb_col, claim_col in pairs:
        for _, run in used.iterrows():
            lb, claim = run.get(lb_col), run.get(claim_col)
            if pd.isna(lb) or claim is None or pd.isna(claim):
                continue
            rows.append({"seed": _text(run["seed"]), "run_id": run["run_id"], "claim": fmt(claim), "lb": fmt(lb),
                         "contradicted": bool(lb > claim)})
    contradicted = sum(r["contradicted"] for r in rows)
    return {"rows": rows, "contradicted": contradicted, "note": audit_note(contradicted, len(rows))}


def _aggregates(section: Section, config_id: str) -> list[dict[str, Any]]:
    rows = section.table[section.table["config_id"] == config_id]
    if rows.empty:
        return []
    row = rows.iloc[0]
    out = []
    for col in section.columns:
        mean = row[f"{col.key} mean"]
        if pd.isna(mean):
            continue
        shown = fmt(mean)
        if col.metric == SPREAD:  # the accountants' range, and the spread itself
            shown = f"{spread_text(row[f'{col.key} lo'], row[f'{col.key} hi'])} (spread {fmt(mean)})"
        out.append({**column_header(col), "mean": shown, "value": exact(mean),
                    "ci": fmt(row[f"{col.key} ci95"]), "std": fmt(row[f"{col.key} std"]),
                    "n": int(row[f"{col.key} n"]), "best": config_id in section.best.get(col.key, set()),
                    "tie": config_id in section.ties.get(col.key, set()),
                    "mark_note": section.mark_notes.get(col.key, ""),
                    "note": accountants_title(section, row, col) if col.metric == SPREAD else ""})
    return out


def _run(run: pd.Series) -> dict[str, Any]:
    duration = (run["end_time"] - run["start_time"]).total_seconds() \
        if not (pd.isna(run["end_time"]) or pd.isna(run["start_time"])) else None
    env = {name: _text(run.get(col)) for name, col in _ENV}
    return {"seed": _text(run["seed"]), "run_id": run["run_id"], "status": run["status"],
            "used": bool(run["used"]), "started": when(run["start_time"]),
            "duration": "" if duration is None else f"{duration:.1f} s",
            "git_commit": run["git_commit"] or "unknown", "suite_version": run["suite_version"] or "unknown",
            "env": env}


def _per_run(section: Section, finished: pd.DataFrame) -> list[dict[str, Any]]:
    """One line per metric, one cell per FINISHED run (seed order): the values behind each mean."""
    out = []
    for col in section.columns:
        values = finished[f"metrics.{col.key}"] if f"metrics.{col.key}" in finished else pd.Series(dtype=float)
        if values.isna().all():
            continue
        cells = [fmt(v) for v in values]
        if col.metric == SPREAD:  # each run's smallest–largest epsilon over the accountants
            unit = col.key.removeprefix(SPREAD)
            cells = [spread_text(lo, hi) if not pd.isna(v) else fmt(v)
                     for v, lo, hi in zip(values, finished[f"spread_lo{unit}"], finished[f"spread_hi{unit}"])]
        out.append({**column_header(col), "cells": cells})
    return out


def _failure(run: pd.Series) -> dict[str, Any]:
    return {"seed": _text(run["seed"]), "run_id": run["run_id"], "status": run["status"],
            "started": when(run["start_time"]), "reason": run["failure_reason"] or "no reason recorded"}


def _text(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "—"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
