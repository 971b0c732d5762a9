"""Sections -> files: HTML pages (jinja2), SVG plots, CSV and JSON downloads.

Layout of the output folder (every link is relative, so it works from ``file://`` and any
static host)::

    index.html  style.css
    claims.html                 the papers' claims: a verdict per claim and tier, with the pairs behind it
    tasks/<task>.html           a table per tier and task version, plots, failed runs
    config/<config id>.html     one configuration: resolved config, aggregates, runs per seed
    plots/<task>-....svg        Pareto plots and the curves tasks declare
    data/<task>.csv, .json      the aggregated tables
    data/claims.json            the claims' verdicts (id, paper, statement, tier, metric, effect, ci_low, ...)
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import re
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from leaderboard.aggregate import STATS, Section
from leaderboard.claims_page import claims_json, claims_summary, claims_view
from leaderboard.configs import config_view
from leaderboard.curves import CurvePlot, curve_plots
from leaderboard.plots import Plot, pareto_plots
from leaderboard.privacy import SPREAD
from leaderboard.views import failures_view, headline_view, table_view, task_counts

_TEMPLATES = Path(__file__).resolve().parent / "templates"
_ENDS = {SPREAD: ("lo", "hi")}  # the accountants' smallest and largest epsilon (means over seeds)


Drawn = tuple[list[Plot], list[CurvePlot]]  # a section's Pareto plots and curves


def draw_plots(sections: list[Section], out_dir: Path) -> list[Drawn]:
    """Draw every section's plots into ``out_dir``; what was drawn, section by section."""
    if sections:
        out_dir.mkdir(parents=True, exist_ok=True)
    return [(pareto_plots(s, out_dir), curve_plots(s, out_dir)) for s in sections]


@contextmanager
def drawing(sections: list[Section], out_dir: Path) -> Iterator[Callable[[], list[Drawn]]]:
    """Draw the plots (:func:`draw_plots`) in a forked process while the block goes on; yields the
    function that waits for them. Drawing SVGs is a third of a build, and apart from the paired tests
    that mark the best rows, which the plots do not show, it needs nothing the block computes.
    Where ``fork`` is not the safe default (not Linux), the plots are drawn first, in this process."""
    if sys.platform != "linux":
        drawn = draw_plots(sections, out_dir)
        yield lambda: drawn
        return
    with ProcessPoolExecutor(1, mp_context=mp.get_context("fork")) as pool:
        yield pool.submit(draw_plots, sections, out_dir).result


def write_site(runs: pd.DataFrame, sections: list[Section], out: Path, claims: list[dict[str, Any]] | None = None,
               drawn: Callable[[], list[Drawn]] | None = None) -> list[Path]:
    """Render every page, plot and download into ``out``; return the files written.

    ``claims``: the rows of :func:`leaderboard.claims.evaluate_claims`, for ``claims.html``. ``drawn``: waits for
    the sections' plots, drawn into ``out / "plots"`` elsewhere (:func:`drawing`), and returns them; it is called
    once the pages that show no plot are written. By default the plots are drawn here.
    """
    env = _jinja()
    claims = claims or []
    written = [_write(out / "style.css", (_TEMPLATES / "style.css").read_text())]
    for section in sections:
        written += _config_pages(env, section, out, f"tasks/{_slug(section.task)}.html")
    written.append(_write(out / "claims.html", env.get_template("claims.html.j2").render(
        root="", claims=claims_view(claims))))
    written.append(_write(out / "data" / "claims.json", claims_json(claims)))
    plots = dict(zip(map(id, sections), drawn() if drawn else draw_plots(sections, out / "plots"), strict=True))
    cards = []
    for task in sorted(set(runs["task"])) if not runs.empty else []:
        mine = [s for s in sections if s.task == task]
        task_runs = runs[runs["task"] == task]
        page, files = _task_files(env, task, mine, task_runs, out, [plots[id(s)] for s in mine])
        written += files
        shown = [_card_section(s, v) for s, v in zip(mine, page["sections"]) if not v["older"]]
        cards.append({**page, "sections": shown, "older": len(mine) - len(shown)})
    written.append(_write(out / "index.html", env.get_template("index.html.j2").render(
        root="", tasks=cards, claims=claims_summary(claims))))
    return written


def _task_files(env: Any, task: str, sections: list[Section], runs: pd.DataFrame,
                out: Path, drawn: list[Drawn]) -> tuple[dict[str, Any], list[Path]]:
    slug = _slug(task)
    written: list[Path] = []
    views = []
    newest = {}
    for section, (plots, curves) in zip(sections, drawn, strict=True):  # newest version first within a tier
        newest.setdefault(section.tier, section.version)
        written += [out / "plots" / p.filename for p in [*plots, *curves]]
        view = _section_view(section, plots, older=newest[section.tier] != section.version)
        view["curves"] = [{"src": f"../plots/{c.filename}", "title": c.title, "description": c.description}
                          for c in curves]
        views.append(view)
    description = next((s.schema.description for s in sections if s.schema.description), "")
    page = {"name": task, "description": description, "counts": task_counts(runs), "sections": views,
            "href": f"tasks/{slug}.html", "csv": f"data/{slug}.csv", "json": f"data/{slug}.json"}
    task_page = {**page, "csv": f"../{page['csv']}", "json": f"../{page['json']}"}
    html = env.get_template("task.html.j2").render(root="../", task=task_page)
    written.append(_write(out / "tasks" / f"{slug}.html", html))
    written.append(_write(out / "data" / f"{slug}.csv", _csv(sections)))
    written.append(_write(out / "data" / f"{slug}.json", _json(task, description, sections)))
    return page, written


def _section_view(section: Section, plots: list, older: bool) -> dict[str, Any]:
    title = f"{section.tier} tier · task version {section.version}"
    return {"title": title, "anchor": _slug(section.slug), "older": older, "table": table_view(section, "../"),
            "notes": list(section.schema.notes),
            "headlines": headline_view(section, "../"), "failures": failures_view(section, "../"),
            "plots": [{"src": f"../plots/{p.filename}", "title": p.title} for p in plots]}


def _card_section(section: Section, view: dict[str, Any]) -> dict[str, Any]:
    """A section as the index card shows it: links relative to the index."""
    return {"title": view["title"], "headlines": headline_view(section, ""), "failures": len(view["failures"])}


def _config_pages(env: Any, section: Section, out: Path, task_href: str) -> list[Path]:
    template = env.get_template("config.html.j2")
    written = []
    for _, config in section.configs.iterrows():
        view = config_view(section, config)
        html = template.render(root="../", c=view, task_href=task_href)
        written.append(_write(out / "config" / f"{view['config_id']}.html", html))
    return written


def _csv(sections: list[Section]) -> str:
    """The aggregated rows of every section, one line per configuration."""
    frames = []
    for s in sections:
        if s.table.empty:
            continue
        params = sorted(c for c in s.table if c.startswith("params."))
        stats = [f"{c.key} {stat}" for c in s.columns for stat in STATS]
        frame = s.table[["config_id", "method", "privacy_unit", "seeds", "finished", "failed", "killed", *params,
                         *stats]].copy()
        frame.insert(0, "task_version", s.version)
        frame.insert(0, "tier", s.tier)
        frames.append(frame)
    if not frames:
        return "tier,task_version,config_id,method,privacy_unit,seeds\n"
    return pd.concat(frames, ignore_index=True).to_csv(index=False, lineterminator="\n")


def _json(task: str, description: str, sections: list[Section]) -> str:
    payload = {"task": task, "description": description, "sections": [_json_section(s) for s in sections]}
    return json.dumps(payload, indent=1, sort_keys=True, allow_nan=False) + "\n"


def _json_section(s: Section) -> dict[str, Any]:
    columns = [{"key": c.key, "metric": c.metric, "label": c.label, "direction": c.direction, "unit": c.unit,
                "description": c.description, "privacy_unit": c.privacy_unit,
                "best": sorted(s.best.get(c.key, set())), "tie": sorted(s.ties.get(c.key, set()))} for c in s.columns]
    rows = []
    for _, row in s.table.iterrows():
        config = {c.removeprefix("params."): _param(row[c]) for c in s.table if c.startswith("params.")}
        metrics = {c.key: {stat: _number(row[f"{c.key} {stat}"]) for stat in (*STATS, *_ENDS.get(c.metric, ()))}
                   for c in s.columns if not pd.isna(row[f"{c.key} mean"])}
        rows.append({"config_id": row["config_id"], "method": row["method"], "privacy_unit": row["privacy_unit"],
                     "seeds": int(row["seeds"]), "failed": int(row["failed"]), "killed": int(row["killed"]),
                     "config": config, "metrics": metrics})
    return {"tier": s.tier, "task_version": s.version, "notes": list(s.schema.notes), "columns": columns,
            "rows": rows}


def _param(text: str) -> Any:
    """A param back to its config value (params are logged as canonical JSON unless strings)."""
    if text == "":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _number(value: Any) -> float | int | None:
    if value is None or pd.isna(value):
        return None
    value = float(value)
    return int(value) if value.is_integer() and abs(value) < 2**53 else value if math.isfinite(value) else None


def _jinja() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATES)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "task"
