"""Did a change move any result? Two stores of the same tier, compared config by config against seed noise.

    .venv/bin/python -m benchmarks.compare BEFORE_URI AFTER_URI [--tier quick] [--z 3] [--ignore KEY ...]

A speed change must leave every result where it was, up to the noise of the seeds. For each family,
config (its params, the seed, the task's version and any ``--ignore`` key left out: a setting of how a
run executes, such as fl's ``ray_cpus``) and result metric (``utility/``,
``privacy/`` and ``bandwidth/`` keys; ``compute/`` ones are meant to move), it compares the mean over
the FINISHED runs of each store:

- the seed noise of a metric is the standard deviation between seeds of one config, pooled over the
  configs of the family that ran more than one seed in either store;
- a difference counts as beyond the noise when it exceeds ``z`` standard errors of a difference of
  two means (``sd * sqrt(1/n_before + 1/n_after)``), or, where seeds do not vary the metric (pooled
  sd 0: bytes, a calibrated epsilon), when it differs at all (relative 1e-6).

It prints, per family, how many comparisons it made and every one beyond the noise, and exits 1
when any is. With dozens of metrics some differences beyond 2 standard errors are expected by
chance; the default z is 3.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from suite.task import discover
from suite.tracking import RunRecord, Tracker

RESULT_AXES = ("utility/", "privacy/", "bandwidth/")
IGNORED_PARAMS = ("seed", "version")


@dataclass(frozen=True)
class Difference:
    family: str
    config: str
    metric: str
    before: float
    after: float
    n_before: int
    n_after: int
    z: float  # the difference in standard errors (inf: a metric seeds do not vary, changed)


def config_key(run: RunRecord, ignored: Iterable[str] = ()) -> str:
    """The run's config without its seed, version and ``ignored`` keys: what two stores' runs of one cell share."""
    skip = {*IGNORED_PARAMS, *ignored}
    return ", ".join(f"{k}={v}" for k, v in sorted(run.params.items()) if k not in skip)


def results(runs: list[RunRecord], ignored: Iterable[str] = ()) -> dict[str, dict[str, list[float]]]:
    """Config key -> result metric -> its values over the runs (one per seed)."""
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for metric, value in run.metrics.items():
            if metric.startswith(RESULT_AXES) and math.isfinite(value):
                out[config_key(run, ignored)][metric].append(value)
    return out


def pooled_sd(groups: list[list[float]]) -> float | None:
    """The within-group standard deviation pooled over groups of two or more values; None without any."""
    sums = [(sum((x - statistics.fmean(g)) ** 2 for x in g), len(g) - 1) for g in groups if len(g) > 1]
    dof = sum(d for _, d in sums)
    return math.sqrt(sum(s for s, _ in sums) / dof) if dof else None


def compare_family(family: str, before: list[RunRecord], after: list[RunRecord], *,
                   z_max: float = 3.0, ignored: Iterable[str] = ()) -> tuple[int, list[Difference]]:
    """(comparisons made, those beyond ``z_max`` standard errors) for one family."""
    a, b = results(before, ignored), results(after, ignored)
    metrics = {m for per in (*a.values(), *b.values()) for m in per}
    made, beyond = 0, []
    for metric in sorted(metrics):
        sd = pooled_sd([per[metric] for per in (*a.values(), *b.values()) if metric in per])
        for config in sorted(set(a) & set(b)):
            x, y = a[config].get(metric), b[config].get(metric)
            if not x or not y:
                continue
            made += 1
            delta = statistics.fmean(y) - statistics.fmean(x)
            if sd is None:
                continue  # one seed everywhere: no noise to judge by
            if sd == 0:
                z = 0.0 if abs(delta) <= 1e-6 * max(1.0, abs(statistics.fmean(x))) else math.inf
            else:
                z = abs(delta) / (sd * math.sqrt(1 / len(x) + 1 / len(y)))
            if z > z_max:
                beyond.append(Difference(family, config, metric, statistics.fmean(x), statistics.fmean(y),
                                         len(x), len(y), z))
    return made, beyond


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--tier", default="quick")
    parser.add_argument("--z", type=float, default=3.0, help="standard errors beyond which a difference counts")
    parser.add_argument("--ignore", action="append", default=[], metavar="KEY",
                        help="a config key that says how a run executes, not what it computes (repeatable)")
    args = parser.parse_args()
    stores = Tracker(args.before, write=False), Tracker(args.after, write=False)
    families = discover().names()
    flagged = []
    print(f"{'family':14} {'compared':>8} {'beyond':>6}")
    for family in families:
        before, after = ([r for r in t.runs(family, status="FINISHED") if r.tags.get("suite.tier") == args.tier]
                         for t in stores)
        made, beyond = compare_family(family, before, after, z_max=args.z, ignored=args.ignore)
        print(f"{family:14} {made:8d} {len(beyond):6d}")
        flagged += beyond
    for d in flagged:
        print(f"\n{d.family} {d.metric}: {d.before:.6g} (n={d.n_before}) -> {d.after:.6g} (n={d.n_after}), "
              f"{d.z:.1f} standard errors\n  {d.config}")
    sys.exit(1 if flagged else 0)


if __name__ == "__main__":
    main()
