"""Paired statistics for claims and ties: intervals of paired effects, McNemar's exact test. Pure functions.

Two configurations are compared on *pairs* of runs (same seed, same other config keys). The
effect is the mean over pairs of a per-pair effect: the difference of a metric (``a - b``) or
the log of its ratio (``log a/b``, reported back as a ratio: the geometric mean of the pairs'
ratios). Its 95% interval covers two sources of doubt:

* **seeds** (:func:`t_interval`): the Student t interval of the mean of the pairs' effects, with
  ``pairs - 1`` degrees of freedom. With the two or three seeds of a quick tier a percentile
  bootstrap over pairs would be far too narrow: its interval is the range of the pairs' effects,
  which excludes zero by chance in one case out of four (two pairs) or eight (three pairs) even
  when there is no effect. The t interval is exact for normal effects and wide when few pairs
  disagree; identical pairs (a deterministic metric) give a point.
* **the test set** (:func:`bootstrap_pairs_examples`), when every run of every pair logged its
  per-example scores on the same test examples in the same order. Each replicate draws the pairs
  with replacement *and* the test examples with replacement, one draw of examples shared by
  every pair and both sides (a pair's two sides are always scored on identical examples, and
  the common test set is resampled once, not per run); its effect is the mean over the drawn
  pairs of the effect on the drawn examples: the paired "multi-bootstrap" of Sellam et al.
  (2022, The MultiBERTs).

With per-example scores and two pairs or more, the interval is the wider of the two (their
union: :func:`widest`), so neither the seeds' spread nor the test set's noise is left out.
With one pair only the bootstrap over test examples is possible: it measures the test set's
noise and says nothing of seed-to-seed variation, which the interval's description states.

>>> import numpy as np
>>> i = t_interval(np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 0.0]), kind="difference")
>>> round(i.effect, 6), round(i.low, 3), round(i.high, 3)  # 2 -/+ t(0.975, 2) * 1 / sqrt(3)
(2.0, -0.484, 4.484)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np

Kind = Literal["difference", "ratio"]
Transform = Literal["identity", "exp"]
REPLICATES = 2000
LEVEL = 0.95
_CHUNK = 250  # replicates drawn at once over the test examples


@dataclass(frozen=True)
class Interval:
    """A paired effect and its 95% interval, and how the interval was made."""

    effect: float
    low: float
    high: float
    pairs: int
    examples: int = 0  # test examples (or blocks of them) resampled; 0: pairs only
    replicates: int = 0  # bootstrap replicates; 0: no bootstrap
    block: int = 1  # test examples per resampled unit
    method: Literal["t", "bootstrap", "t+bootstrap"] = "t"

    def describe(self) -> str:
        """How the interval was made, in words."""
        t = f"Student t over {self.pairs} pairs"
        units = f"{self.examples} test examples" if self.block == 1 else \
            f"{self.examples} blocks of {self.block} test examples"
        boot = f"{units} (resampled jointly for both sides; {self.replicates} replicates)"
        if self.method == "t":
            return f"{t}, 95%"
        if self.method == "t+bootstrap":
            return f"the wider of {t} and a bootstrap over the pairs and {boot}, 95%"
        return f"bootstrap of the one pair over {boot}, 95%: test-set noise only, seed-to-seed variation not measured"


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value for one pair of classifiers on the same examples.

    ``a_only``: examples A gets right and B wrong; ``b_only``: the reverse. Under the null both
    kinds of disagreement are equally likely, so ``a_only`` ~ Binomial(a_only + b_only, 1/2); the
    p-value doubles the smaller tail (capped at 1).

    >>> mcnemar_exact(1, 9)  # 2 * (C(10,0) + C(10,1)) / 2**10
    0.021484375
    """
    if a_only < 0 or b_only < 0:
        raise ValueError(f"discordant counts must be >= 0, got {a_only} and {b_only}")
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1))
    return min(1.0, 2 * tail / 2**n)


def per_pair_effects(a: np.ndarray, b: np.ndarray, *, kind: Kind) -> np.ndarray:
    """Each pair's effect on the additive scale: ``a - b``, or ``log(a / b)`` for a ratio."""
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if kind == "difference":
        return a - b
    if kind == "ratio":
        if (a <= 0).any() or (b <= 0).any():
            raise ValueError("a ratio effect needs positive values on both sides")
        return np.log(a) - np.log(b)
    raise ValueError(f"kind must be 'difference' or 'ratio', got {kind!r}")


def paired_effect(a: np.ndarray, b: np.ndarray, *, kind: Kind) -> float:
    """Mean paired difference, or geometric-mean ratio, of two aligned arrays of run values."""
    return _report(float(per_pair_effects(a, b, kind=kind).mean()), kind)


def t_interval(a: np.ndarray, b: np.ndarray, *, kind: Kind, level: float = LEVEL) -> Interval | None:
    """The paired effect of run values ``a[i]`` vs ``b[i]`` with its Student t interval over the pairs.

    None with fewer than two pairs (one pair has no spread).
    """
    from scipy.special import stdtrit  # Student t quantile: stdtrit(df, p) == scipy.stats.t.ppf(p, df)

    effects = per_pair_effects(a, b, kind=kind)
    s = len(effects)
    if s < 2:
        return None
    mean = float(effects.mean())
    half = float(stdtrit(s - 1, 0.5 + level / 2)) * float(effects.std(ddof=1)) / math.sqrt(s)
    return Interval(_report(mean, kind), _report(mean - half, kind), _report(mean + half, kind), s)


def widest(seeds: Interval | None, examples: Interval) -> Interval:
    """The union of the seeds' t interval and the bootstrap over pairs and examples (see above)."""
    if seeds is None:
        return examples
    return replace(examples, low=min(seeds.low, examples.low), high=max(seeds.high, examples.high),
                   method="t+bootstrap")


def bootstrap_pairs_examples(a_values: np.ndarray, b_values: np.ndarray, *, kind: Kind,
                             rng: np.random.Generator, a_weights: np.ndarray | None = None,
                             b_weights: np.ndarray | None = None, transform: Transform = "identity",
                             replicates: int = REPLICATES, level: float = LEVEL) -> Interval:
    """The paired effect with a bootstrap over pairs and test examples (see the module docstring).

    ``a_values[s, i]`` is what run A of pair ``s`` scored on example ``i`` (1/0 for a correct
    prediction, a token's loss, ...), ``a_weights[s, i]`` its weight (1 when None); a run's
    metric is ``transform(sum(values) / sum(weights))`` (``exp`` turns a mean loss into a
    perplexity). Both sides must have the same shape: the same examples in the same order.
    """
    import numpy as np

    a_values, b_values = np.atleast_2d(np.asarray(a_values, float)), np.atleast_2d(np.asarray(b_values, float))
    if a_values.shape != b_values.shape:
        raise ValueError(f"both sides need the same pairs and examples, got {a_values.shape} and {b_values.shape}")
    a_w = np.ones_like(a_values) if a_weights is None else np.atleast_2d(np.asarray(a_weights, float))
    b_w = np.ones_like(b_values) if b_weights is None else np.atleast_2d(np.asarray(b_weights, float))
    s, n = a_values.shape
    point = per_pair_effects(_metric(a_values.sum(1), a_w.sum(1), transform),
                             _metric(b_values.sum(1), b_w.sum(1), transform), kind=kind)
    pair_draws = rng.multinomial(s, np.full(s, 1.0 / s), size=replicates)
    per_pair = np.empty((replicates, s))
    for start in range(0, replicates, _CHUNK):  # bounded memory for large test sets
        size = min(_CHUNK, replicates - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size)  # one draw of examples per replicate
        per_pair[start:start + size] = per_pair_effects(_metric(counts @ a_values.T, counts @ a_w.T, transform),
                                                        _metric(counts @ b_values.T, counts @ b_w.T, transform),
                                                        kind=kind)
    replicate = (pair_draws * per_pair).sum(1) / s
    low, high = _percentiles(replicate, level)
    return Interval(_report(float(point.mean()), kind), _report(low, kind), _report(high, kind), s, n, replicates,
                    method="bootstrap")


def clears(interval: Interval | None, *, direction: Literal["higher", "lower"], margin: float) -> str:
    """``holds`` when the whole interval lies beyond ``margin`` on the claimed side, ``contradicted``
    when it lies wholly on the other side, else ``inconclusive`` (also without an interval).
    Beyond means by more than rounding: an interval of exactly the margin clears neither way."""
    if interval is None:
        return "inconclusive"
    slack = 1e-9 * max(1.0, abs(margin))  # a ratio of exactly the margin, computed as exp(log a - log b), is no gain
    above, below = interval.low > margin + slack, interval.high < margin - slack
    if direction == "higher":
        return "holds" if above else "contradicted" if below else "inconclusive"
    if direction == "lower":
        return "holds" if below else "contradicted" if above else "inconclusive"
    raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")


def _metric(numerator: np.ndarray, weight: np.ndarray, transform: Transform) -> np.ndarray:
    import numpy as np

    mean = numerator / weight
    if transform == "identity":
        return mean
    if transform == "exp":
        return np.exp(mean)
    raise ValueError(f"transform must be 'identity' or 'exp', got {transform!r}")


def _percentiles(replicate: np.ndarray, level: float) -> tuple[float, float]:
    import numpy as np

    tail = (1.0 - level) / 2
    low, high = np.quantile(replicate, [tail, 1.0 - tail])
    return float(low), float(high)


def _report(value: float, kind: Kind) -> float:
    """Back from the additive scale: a ratio's mean log is reported as a ratio."""
    return math.exp(value) if kind == "ratio" else value
