"""Build the static leaderboard: one table per task and tier, aggregated over seeds.

A first, small version: FINISHED runs only, mean and standard deviation over seeds of
every metric, one HTML page and one CSV per task. It reads only what the result schema
contracts (tags ``suite.*``, metric keys, the ``result.json`` artifact's directions).
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from suite.tracking import Tracker

def collect(tracker: Tracker) -> pd.DataFrame:
    """Every FINISHED suite run as one row: tags, params and metrics."""
    rows = []
    for exp in tracker.client.search_experiments():
        for run in tracker.runs(exp.name, status="FINISHED"):
            if "suite.task" not in run.data.tags:
                continue
            row = {"run_id": run.info.run_id}
            row.update({f"tags.{k}": v for k, v in run.data.tags.items() if k.startswith("suite.")})
            row.update({f"params.{k}": v for k, v in run.data.params.items()})
            row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
            rows.append(row)
    return pd.DataFrame(rows)


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and seed count of each metric per (task, tier, config without seed)."""
    if runs.empty:
        return runs
    params = [c for c in runs if c.startswith("params.") and c != "params.seed"]
    metrics = [c for c in runs if c.startswith("metrics.")]
    keys = ["tags.suite.task", "tags.suite.tier", *params]
    frame = runs[keys + metrics].copy()
    frame[params] = frame[params].fillna("")
    grouped = frame.groupby(keys, dropna=False, sort=True)
    out = grouped[metrics].agg(["mean", "std"])
    out.columns = [f"{m.removeprefix('metrics.')} {stat}" for m, stat in out.columns]
    out["seeds"] = grouped.size()
    return out.reset_index()


def build_site(tracker: Tracker, out_dir: str | Path) -> Path:
    """Write ``index.html`` and one CSV per task into ``out_dir``; return the index path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = aggregate(collect(tracker))
    sections = []
    if table.empty:
        sections.append("<p>No finished runs yet: run <code>make bench</code> or <code>suite sweep</code>.</p>")
    else:
        for task, rows in table.groupby("tags.suite.task", sort=True):
            rows = rows.dropna(axis=1, how="all")
            csv_name = f"{task}.csv"
            rows.to_csv(out / csv_name, index=False)
            shown = rows.rename(columns=lambda c: c.removeprefix("params.").removeprefix("tags.suite."))
            sections.append(f"<h2>{html.escape(str(task))}</h2><p><a href='{csv_name}'>CSV</a></p>"
                            + shown.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep=""))
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>Benchmark leaderboard</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
            "td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
            "<h1>Privacy-and-efficiency leaderboard</h1>" + "".join(sections) + "</body></html>\n")
    index = out / "index.html"
    index.write_text(page)
    return index
