"""Papers' claims, declared next to the tasks that reproduce them, and how runs are paired to test them.

A family lists its claims in ``tasks/<family>/claims.py`` and sets ``claims = CLAIMS`` on its task
class. A claim compares two sets of configurations, ``a`` and ``b`` (config key -> value), on one
metric::

    Claim("alibi_beats_rr", paper="Malek et al. (2021), Antipodes of Label Differential Privacy",
          statement="... (ALIBI) is a better fit for typical ML tasks", quote=True,
          a={"method": "alibi"}, b={"method": "rr"}, metric="utility/accuracy")

The claim holds when the 95% interval of the effect (``a - b``, or ``a / b`` with
``effect="ratio"``) lies wholly above the margin (``direction="higher"``) or below it
(``"lower"``); it is contradicted when the interval lies wholly on the other side; else it is
inconclusive. The margin defaults to no effect (0 for a difference, 1 for a ratio).

**Pairing.** A run of ``a`` is paired with the run of ``b`` that has the same seed and the same
value of every other config key, except:

* the compared keys (those named in ``a`` or ``b``);
* keys one side never sets: absent from the config of every run of one side (its methods'
  configs lack them, e.g. RR has no ``delta``, FedAvg no codec keys) or null there, and set on
  some run of the other side. Such a key has no value to match, so it is left out of pairing
  (``Pairing.one_sided``, the site's ``not_paired_on``) rather than leaving every run unpaired.
  A key that only some runs of a side lack is still paired on: a missing value matches only a
  missing (or null) one;
* keys the claim lists in ``ignore``.

Every other key must match, so a key added to a family later (and set alike on both sides)
pairs correctly without touching the claim. ``where`` restricts both sides to some values of
shared keys (e.g. the small epsilons). Runs without a partner are counted as unpaired; two runs
of one side that would take the same partner (the claim does not pin down a configuration)
are counted as ambiguous and left out.

The site and ``suite claims`` read claims in their serialized form (:func:`declared`), so the
leaderboard never imports the task modules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from suite.stats import clears

_ID = re.compile(r"^[a-z0-9_]+$")
VERDICTS = ("holds", "contradicted", "inconclusive")


@dataclass(frozen=True)
class Claim:
    """One paper's claim as a paired comparison of two sets of configurations of a task."""

    id: str  # unique within the task: lower-case letters, digits, _
    paper: str  # authors, year and title
    statement: str  # one sentence: the paper's words (quote=True) or a paraphrase (quote=False)
    quote: bool  # whether ``statement`` quotes the paper verbatim
    a: Mapping[str, Any]  # the configurations the claim is about (config key -> value)
    b: Mapping[str, Any]  # what they are compared with
    metric: str  # the metric compared, e.g. utility/accuracy
    effect: Literal["difference", "ratio"] = "difference"  # a - b, or a / b
    direction: Literal["higher", "lower"] = "higher"  # the claim: the effect lies above (below) the margin
    margin: float | None = None  # None: no effect (0 for a difference, 1 for a ratio)
    where: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # both sides: allowed values of shared keys
    ignore: tuple[str, ...] = ()  # further keys not paired on
    source: str = ""  # where in the paper (abstract, section, figure)
    note: str = ""  # how the paper's words became this test (the margin, the configurations chosen)

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise ValueError(f"claim id {self.id!r} must be lower-case letters, digits and '_'")
        if self.effect not in ("difference", "ratio"):
            raise ValueError(f"claim {self.id}: effect must be 'difference' or 'ratio', got {self.effect!r}")
        if self.direction not in ("higher", "lower"):
            raise ValueError(f"claim {self.id}: direction must be 'higher' or 'lower', got {self.direction!r}")
        if not self.a or not self.b:
            raise ValueError(f"claim {self.id}: a and b must each name at least one config key")
        if not any(k in self.b and self.b[k] != v for k, v in self.a.items()):
            raise ValueError(f"claim {self.id}: a and b must set some key to different values, so that no run "
                             "is on both sides")
        if "seed" in {*self.a, *self.b, *self.where, *self.ignore}:
            raise ValueError(f"claim {self.id}: runs are always paired by seed; do not name it")
        if self.effect == "ratio" and self.margin is not None and self.margin <= 0:
            raise ValueError(f"claim {self.id}: a ratio's margin must be > 0, got {self.margin}")

    @property
    def threshold(self) -> float:
        """The margin the interval must clear."""
        if self.margin is not None:
            return float(self.margin)
        return 1.0 if self.effect == "ratio" else 0.0

    def verdict(self, low: float | None, high: float | None) -> str:
        """``holds``, ``contradicted`` or ``inconclusive`` for an interval (None: no interval)."""
        from suite.stats import Interval

        if low is None or high is None:
            return "inconclusive"
        return clears(Interval(0.0, low, high, 0), direction=self.direction, margin=self.threshold)

    def comparison(self) -> str:
        """The claim in symbols: ``accuracy(method=alibi) - accuracy(method=rr) > 0``."""
        name = self.metric.split("/", 1)[-1]
        op = " - " if self.effect == "difference" else " / "
        sign = ">" if self.direction == "higher" else "<"
        where = "".join(f", {k} in {{{', '.join(map(_text, v))}}}" for k, v in sorted(self.where.items()))
        return f"{name}({_selector(self.a)}){op}{name}({_selector(self.b)}) {sign} {self.threshold:g}{where}"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "paper": self.paper, "statement": self.statement, "quote": self.quote,
                "a": dict(self.a), "b": dict(self.b), "metric": self.metric, "effect": self.effect,
                "direction": self.direction, "margin": self.threshold,
                "where": {k: list(v) for k, v in self.where.items()}, "ignore": list(self.ignore),
                "source": self.source, "note": self.note, "comparison": self.comparison()}

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> Claim:
        """Read :meth:`to_json`'s form, or :func:`declared`'s (whose id is qualified: ``task.id``)."""
        return cls(id=payload["id"].rsplit(".", 1)[-1], paper=payload["paper"], statement=payload["statement"],
                   quote=bool(payload["quote"]), a=dict(payload["a"]), b=dict(payload["b"]),
                   metric=payload["metric"], effect=payload.get("effect", "difference"),
                   direction=payload.get("direction", "higher"), margin=payload.get("margin"),
                   where={k: tuple(v) for k, v in (payload.get("where") or {}).items()},
                   ignore=tuple(payload.get("ignore") or ()), source=payload.get("source", ""),
                   note=payload.get("note", ""))


def _selector(selector: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_text(v)}" for k, v in selector.items())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# --------------------------------------------------------------------------- checks and serialized form


def check_claims(task: Any) -> None:
    """Raise if a task's claims name unknown keys, methods or metrics, or repeat an id."""
    fields = set(task.Config.model_fields) | set(task.method_registry.holders())  # every method's keys
    ids = set()
    for claim in task.claims:
        if not isinstance(claim, Claim):
            raise TypeError(f"task {task.__name__}: claims must be Claim objects, got {claim!r}")
        if claim.id in ids:
            raise TypeError(f"task {task.__name__}: claim id {claim.id!r} is used twice")
        ids.add(claim.id)
        unknown = sorted({*claim.a, *claim.b, *claim.where, *claim.ignore} - fields)
        if unknown:
            raise TypeError(f"task {task.__name__}, claim {claim.id}: unknown config keys {unknown} "
                            f"(keys: {', '.join(sorted(fields))})")
        methods = [s["method"] for s in (claim.a, claim.b) if "method" in s]
        if any(m not in task.methods() for m in methods):
            raise TypeError(f"task {task.__name__}, claim {claim.id}: methods {methods} not all in {task.methods()}")
        metric = claim.metric
        if metric not in task.result_schema() and not (metric.startswith("compute/") and metric.endswith("_s")):
            raise TypeError(f"task {task.__name__}, claim {claim.id}: metric {metric!r} is not declared")


# --------------------------------------------------------------------------- pairing


@dataclass(frozen=True)
class PairedRun:
    """What pairing needs of a run: its id, seed and config (parsed values)."""

    run_id: str
    seed: int
    config: Mapping[str, Any]


@dataclass
class Pairing:
    """Runs of ``a`` matched to runs of ``b``, and what could not be matched."""

    pairs: list[tuple[PairedRun, PairedRun]]
    unpaired_a: list[PairedRun]
    unpaired_b: list[PairedRun]
    ambiguous: list[PairedRun]  # runs left out: another run of their side takes the same partner
    paired_on: list[str]  # config keys that must match (besides the seed)
    one_sided: list[str]  # keys one side never sets


def selects(selector: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    return all(_same(config.get(k), v) for k, v in selector.items())


def pair_runs(claim: Claim, runs: Sequence[PairedRun]) -> Pairing:
    """Match the runs of ``claim.a`` to those of ``claim.b`` (see the module docstring)."""
    allowed = [r for r in runs if all(any(_same(r.config.get(k), v) for v in vs) for k, vs in claim.where.items())]
    side_a = [r for r in allowed if selects(claim.a, r.config)]
    side_b = [r for r in allowed if selects(claim.b, r.config)]
    compared = {*claim.a, *claim.b}
    keys = sorted({k for r in side_a + side_b for k in r.config} - compared - set(claim.ignore) - {"seed"})
    one_sided = [k for k in keys if _never_set(side_a, k) != _never_set(side_b, k)]
    paired_on = [k for k in keys if k not in one_sided]
    groups_a, groups_b = _group(side_a, paired_on), _group(side_b, paired_on)
    ambiguous = [r for g in (*groups_a.values(), *groups_b.values()) if len(g) > 1 for r in g]
    pairs = [(g[0], groups_b[key][0]) for key, g in sorted(groups_a.items())
             if len(g) == 1 and len(groups_b.get(key, [])) == 1]
    unpaired_a = [g[0] for key, g in sorted(groups_a.items()) if len(g) == 1 and key not in groups_b]
    unpaired_b = [g[0] for key, g in sorted(groups_b.items()) if len(g) == 1 and key not in groups_a]
    return Pairing(pairs, unpaired_a, unpaired_b, ambiguous, paired_on, one_sided)


def _never_set(runs: Sequence[PairedRun], key: str) -> bool:
    return bool(runs) and all(r.config.get(key) is None for r in runs)


def _group(runs: Sequence[PairedRun], keys: Sequence[str]) -> dict[tuple, list[PairedRun]]:
    out: dict[tuple, list[PairedRun]] = {}
    for r in runs:
        out.setdefault((r.seed, *(_canonical(r.config.get(k)) for k in keys)), []).append(r)
    return out


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _same(value: Any, wanted: Any) -> bool:
    if isinstance(value, (int, float)) and isinstance(wanted, (int, float)) and not isinstance(value, bool):
        return float(value) == float(wanted)
    return value == wanted
