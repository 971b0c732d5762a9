"""Verdicts of the papers' claims from the store: one row per claim and tier.

The claims come in serialized form (:func:`suite.claims.declared`, passed in by the command
line), so the leaderboard never imports a task. Each claim is tested on the runs of the task
version it was declared with: the runs that enter the aggregates (the newest FINISHED run of each
config hash), paired by :func:`suite.claims.pair_runs`, compared by :func:`leaderboard.paired.compare`.

>>> rows = evaluate_claims(declared_claims(), sections, ["quick"], load)   # doctest: +SKIP
>>> rows[0]["verdict"]                                                # doctest: +SKIP
'holds'
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from leaderboard.aggregate import Section, row_label
from leaderboard.paired import Comparison, ExampleLoader, compare
from suite.claims import Claim, Pairing, PairedRun, pair_runs

# The fields of site/data/claims.json every row has (more follow them).
FIELDS = ("id", "paper", "statement", "tier", "metric", "effect", "ci_low", "ci_high", "pairs", "verdict")


def evaluate_claims(claims: Sequence[Mapping[str, Any]], sections: Sequence[Section], tiers: Iterable[str],
                    load: ExampleLoader | None) -> list[dict[str, Any]]:
    """A row per claim and tier (in the order given), whatever the runs: no runs is an inconclusive row."""
    by_key = {(s.task, s.tier, s.version): s for s in sections}
    rows = []
    for payload in claims:
        claim = Claim.from_json(payload)
        for tier in tiers:
            section = by_key.get((payload["task"], tier, str(payload["task_version"])))
            rows.append(_row(payload, claim, tier, section, load))
    return rows


def store_tiers(sections: Sequence[Section]) -> list[str]:
    """The tiers that have runs in the store, quick first."""
    order = {"quick": 0, "full": 1}
    return sorted({s.tier for s in sections}, key=lambda t: (order.get(t, 9), t))


def _row(payload: Mapping[str, Any], claim: Claim, tier: str, section: Section | None,
         load: ExampleLoader | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": payload["id"], "paper": claim.paper, "statement": claim.statement, "tier": tier,
        "metric": claim.metric, "effect": None, "ci_low": None, "ci_high": None, "pairs": 0,
        "verdict": "inconclusive", "task": payload["task"], "task_version": str(payload["task_version"]),
        "quote": claim.quote, "source": claim.source, "note": claim.note, "comparison": claim.comparison(),
        "effect_kind": claim.effect, "direction": claim.direction, "margin": claim.threshold,
        "interval": "", "examples": 0, "unpaired_a": 0, "unpaired_b": 0, "ambiguous": 0, "paired_on": [],
        "not_paired_on": [], "configs_a": [], "configs_b": [], "pair_details": [], "remarks": [],
    }
    if section is None:
        row["remarks"].append(f"no runs of {payload['task']} task version {payload['task_version']} in the {tier} tier")
        return row
    used = section.runs[section.runs["used"]]
    runs = {r.run_id: r for _, r in used.iterrows()}
    pairing = pair_runs(claim, [_record(r) for r in runs.values()])
    result = compare([(runs[a.run_id], runs[b.run_id]) for a, b in pairing.pairs], metric=claim.metric,
                     kind=claim.effect, load=load, seed_text=f"{payload['id']}|{tier}")
    labels = {r["config_id"]: row_label(r, section.settings) for _, r in section.configs.iterrows()}
    row.update(_numbers(claim, result), **_pairing(pairing, labels, runs))
    row["pair_details"] = _details(pairing, runs, result, claim.effect, labels)
    row["remarks"] += [r for r in (result.note, _missing(pairing, result)) if r]
    return row


def _numbers(claim: Claim, result: Comparison) -> dict[str, Any]:
    return {"effect": result.effect, "ci_low": result.low, "ci_high": result.high, "pairs": result.pairs,
            "verdict": claim.verdict(result.low, result.high), "interval": result.describe(),
            "examples": result.interval.examples if result.interval else 0,
            "mcnemar_p": result.mcnemar[0] if len(result.mcnemar) == 1 else None}


def _pairing(pairing: Pairing, labels: Mapping[str, str], runs: Mapping[str, pd.Series]) -> dict[str, Any]:
    def configs(records: Iterable[PairedRun]) -> list[dict[str, str]]:
        ids = sorted({runs[r.run_id]["config_id"] for r in records})
        return [{"config_id": i, "label": labels.get(i, i)} for i in ids]

    return {"unpaired_a": len(pairing.unpaired_a), "unpaired_b": len(pairing.unpaired_b),
            "ambiguous": len(pairing.ambiguous), "paired_on": pairing.paired_on,
            "not_paired_on": pairing.one_sided,
            # the configurations compared: those of the pairs (or, with no pair, what each side has)
            "configs_a": configs([a for a, _ in pairing.pairs] or pairing.unpaired_a),
            "configs_b": configs([b for _, b in pairing.pairs] or pairing.unpaired_b)}


def _details(pairing: Pairing, runs: Mapping[str, pd.Series], result: Comparison, kind: str,
             labels: Mapping[str, str]) -> list[dict[str, Any]]:
    out = []
    for i, ((a, b), (va, vb)) in enumerate(zip(pairing.pairs, result.values)):
        a_config, b_config = runs[a.run_id]["config_id"], runs[b.run_id]["config_id"]
        out.append({"seed": a.seed, "a_run": a.run_id, "b_run": b.run_id, "a_config": a_config, "b_config": b_config,
                    "a_label": labels.get(a_config, a_config), "b_label": labels.get(b_config, b_config),
                    "a_value": va, "b_value": vb,
                    "effect": va - vb if kind == "difference" else va / vb,
                    "mcnemar_p": result.mcnemar[i] if i < len(result.mcnemar) else None})
    return out


def _missing(pairing: Pairing, result: Comparison) -> str:
    parts = []
    if pairing.unpaired_a or pairing.unpaired_b:
        parts.append(f"unpaired runs: {len(pairing.unpaired_a)} of A, {len(pairing.unpaired_b)} of B")
    if pairing.ambiguous:
        parts.append(f"{len(pairing.ambiguous)} runs left out: the claim does not pin down one configuration "
                     "per pair (two runs of one side would share a partner)")
    if not result.pairs and not parts:
        parts.append("no runs of either side")
    return "; ".join(parts)


def _record(run: pd.Series) -> PairedRun:
    config = {c.removeprefix("params."): _value(v) for c, v in run.items() if str(c).startswith("params.")}
    return PairedRun(run["run_id"], int(run["seed"]), config)


def _value(text: Any) -> Any:
    """A logged param back to its config value (canonical JSON unless a string; empty: never set)."""
    if text is None or (isinstance(text, float) and pd.isna(text)) or text == "":
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text
