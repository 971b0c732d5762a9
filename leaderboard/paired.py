"""Paired comparisons of runs in the store: what claims and the best-vs-tie marks share.

Given pairs of runs (a run of one side, its partner on the other), :func:`compare` takes each
run's metric value and, where every run of every pair logged per-example scores of the metric
on the same test examples in the same order, those scores too; then it computes the paired
effect and its 95% interval (:mod:`suite.stats`): Student t over the pairs, widened to cover a
bootstrap over pairs and test examples when the examples are there.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from suite.examples import ExampleScores
from suite.stats import Interval, bootstrap_pairs_examples, mcnemar_exact, paired_effect, t_interval, widest

# (run row, metric) -> that run's per-example scores of the metric, or None
ExampleLoader = Callable[[Any, str], "ExampleScores | None"]


@dataclass
class Comparison:
    """The paired effect of side A over side B, its interval, and the pairs behind it."""

    pairs: int
    effect: float | None = None
    interval: Interval | None = None
    values: list[tuple[float, float]] = field(default_factory=list)  # (a, b) per pair
    mcnemar: list[float | None] = field(default_factory=list)  # per pair, when both logged predictions
    note: str = ""

    @property
    def low(self) -> float | None:
        return None if self.interval is None else self.interval.low

    @property
    def high(self) -> float | None:
        return None if self.interval is None else self.interval.high

    def describe(self) -> str:
        if self.interval is not None:
            return self.interval.describe()
        if self.pairs == 1:
            return "one pair and no per-example scores: no interval"
        return "" if not self.pairs else "no interval"


def example_loader(read: Callable[[str, str, str], dict | None]) -> ExampleLoader:
    """A cached :data:`ExampleLoader` over ``read(run_id, artifact_uri, name) -> parsed JSON or None``."""
    cache: dict[tuple[str, str], ExampleScores | None] = {}

    def load(run: Any, metric: str) -> ExampleScores | None:
        key = (run["run_id"], metric)
        if key not in cache:
            artifact = f"examples/{metric.replace('/', '.')}.json"
            payload = read(run["run_id"], run.get("artifact_uri", ""), artifact)
            try:
                cache[key] = ExampleScores.from_json(payload) if payload else None
            except (KeyError, TypeError, ValueError):  # a record this version cannot read: compare by run values
                cache[key] = None
        return cache[key]

    return load


def metric_value(run: Any, metric: str) -> float | None:
    """A run's value of ``metric``; privacy metrics sit in columns split by unit (``... [label]``)."""
    for column in (f"metrics.{metric}", *(c for c in run.index if c.startswith(f"metrics.{metric} ["))):
        value = run.get(column)
        if value is not None and not pd.isna(value):
            return float(value)
    return None


def compare(pairs: Sequence[tuple[Any, Any]], *, metric: str, kind: str = "difference",
            load: ExampleLoader | None = None, seed_text: str = "") -> Comparison:
    """The paired effect of the first runs of ``pairs`` over the second ones on ``metric``.

    ``seed_text`` seeds the bootstrap's generator (a claim's id and tier), so that the same store
    gives the same interval, byte for byte.
    """
    valued = [(a, b, metric_value(a, metric), metric_value(b, metric)) for a, b in pairs]
    valued = [(a, b, va, vb) for a, b, va, vb in valued if va is not None and vb is not None]
    out = Comparison(len(valued), values=[(va, vb) for _, _, va, vb in valued])
    if len(valued) < len(pairs):
        out.note = f"{len(pairs) - len(valued)} pair(s) without a value of {metric} left out"
    if not valued:
        return out
    a_values, b_values = np.array([v[2] for v in valued]), np.array([v[3] for v in valued])
    if kind == "ratio" and ((a_values <= 0).any() or (b_values <= 0).any()):
        out.note = f"a ratio needs positive values of {metric}"
        return out
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "little"))
    seeds = t_interval(a_values, b_values, kind=kind)  # type: ignore[arg-type]
    scores = _examples(valued, metric, load)
    if scores is not None:
        out.interval = widest(seeds, _with_examples(scores, kind, rng))
        out.mcnemar = [_mcnemar(sa, sb) for sa, sb in scores]
    else:
        out.interval = seeds
    if out.interval is not None:
        out.effect = out.interval.effect
    else:  # one pair: its effect, without an interval
        out.effect = paired_effect(a_values, b_values, kind=kind)  # type: ignore[arg-type]
    return out


Scored = list[tuple[ExampleScores, ExampleScores]]


def _examples(valued: list, metric: str, load: ExampleLoader | None) -> Scored | None:
    """Both runs' scores for every pair, on one set of examples; None if any is missing or differs."""
    if load is None:
        return None
    out = []
    for a, b, _, _ in valued:
        sa, sb = load(a, metric), load(b, metric)
        if sa is None or sb is None or sa.examples != sb.examples or sa.n != sb.n or sa.transform != sb.transform:
            return None
        out.append((sa, sb))
    first = out[0][0]
    if any(s.examples != first.examples or s.block != first.block for pair in out for s in pair):
        return None  # pairs scored on different test sets cannot share one draw of examples
    return out


def _with_examples(scores: Scored, kind: str, rng: np.random.Generator) -> Interval:
    blocks = [(sa.blocks(), sb.blocks()) for sa, sb in scores]
    interval = bootstrap_pairs_examples(
        np.array([a[0] for a, _ in blocks]), np.array([b[0] for _, b in blocks]), kind=kind,  # type: ignore[arg-type]
        rng=rng, a_weights=np.array([a[1] for a, _ in blocks]), b_weights=np.array([b[1] for _, b in blocks]),
        transform=scores[0][0].transform)
    return replace(interval, block=scores[0][0].block)


def _mcnemar(a: ExampleScores, b: ExampleScores) -> float | None:
    """Exact McNemar p-value of one pair of classifiers (None for other kinds of scores)."""
    if a.predicted is None or b.predicted is None:
        return None
    a_only = sum(1 for x, y in zip(a.values, b.values) if x > y)
    b_only = sum(1 for x, y in zip(a.values, b.values) if y > x)
    return mcnemar_exact(a_only, b_only)


def fmt_effect(value: float | None, kind: str) -> str:
    """``+0.0123`` for a difference, ``33.1x`` for a ratio; an em dash when missing."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.3g}x" if kind == "ratio" else f"{value:+.4g}"
