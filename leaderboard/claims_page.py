"""Claim rows -> ``claims.html`` (a row per claim and tier, the pairs behind it) and ``data/claims.json``."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from leaderboard.paired import fmt_effect
from leaderboard.views import fmt

ABOUT = ("Each paper's claim as a paired comparison of the suite's runs: runs of the two sides are paired by "
         "seed and by every config key but the compared ones (and keys only one side sets). The effect is the "
         "mean paired difference (or the geometric-mean ratio) with a 95% interval: Student t over the pairs, "
         "widened, where runs logged per-example test scores, to cover a bootstrap over the pairs and the test "
         "examples resampled jointly for both sides (with one pair, that bootstrap alone). "
         "holds: the interval clears the claim's margin; contradicted: it lies wholly on the other side; "
         "inconclusive: neither, or no interval.")


def claims_json(rows: Sequence[dict[str, Any]]) -> str:
    payload = {"about": ABOUT, "claims": [_clean(r) for r in rows]}
    return json.dumps(payload, indent=1, sort_keys=True, allow_nan=False) + "\n"


def claims_view(rows: Sequence[dict[str, Any]], root: str = "") -> dict[str, Any]:
    """What ``claims.html`` shows: a summary, the table and a details block per row."""
    counts = Counter(r["verdict"] for r in rows)
    return {"about": ABOUT, "rows": [_row(r, root) for r in rows],
            "summary": ", ".join(f"{counts[v]} {v}" for v in ("holds", "contradicted", "inconclusive") if counts[v])
            or "no claims"}


def claims_summary(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Verdict counts for the index page."""
    counts = Counter(r["verdict"] for r in rows)
    return {v: counts[v] for v in ("holds", "contradicted", "inconclusive")}


def _row(r: dict[str, Any], root: str) -> dict[str, Any]:
    kind = r["effect_kind"]
    interval = (f"[{fmt_effect(r['ci_low'], kind)}, {fmt_effect(r['ci_high'], kind)}]"
                if r["ci_low"] is not None else "no interval")
    anchor = f"{r['id']}-{r['tier']}".replace(".", "-")

    def links(configs: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{"href": f"{root}config/{c['config_id']}.html", "label": c["label"]} for c in configs]

    details = [{"seed": d["seed"], "a": fmt(d["a_value"]), "b": fmt(d["b_value"]), "a_label": d["a_label"],
                "b_label": d["b_label"],
                "effect": fmt_effect(d["effect"], kind),
                "mcnemar": "" if d["mcnemar_p"] is None else f"{d['mcnemar_p']:.3g}",
                "a_href": f"{root}config/{d['a_config']}.html", "b_href": f"{root}config/{d['b_config']}.html"}
               for d in r["pair_details"]]
    return {**r, "anchor": anchor, "effect_text": fmt_effect(r["effect"], kind), "interval_text": interval,
            "links_a": links(r["configs_a"]), "links_b": links(r["configs_b"]), "details": details,
            "quote_text": f"“{r['statement']}”" if r["quote"] else r["statement"],
            "remarks_text": "; ".join(r["remarks"])}


def _clean(value: Any) -> Any:
    """Rows as JSON: non-finite numbers as null, tuples as lists."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
