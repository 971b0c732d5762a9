"""Benchmark table of the fl quick tier, read from a store.

    .venv/bin/python -m benchmarks.fl [--store sqlite:///mlflow.db]

Per setting (method, bits, kept fraction, codebook): accuracy (mean ± std over seeds), the
bytes one client sends per round (Flower-serialized, SecAgg+ included) and the SecAgg+ share
of them, compression against fp32 FedAvg of the same model, bits per parameter, wall time
and Simulation Engine start-up per run; then whether the paper's target holds: a setting
with at least 32x compression whose mean accuracy is within 2 points of FedAvg's.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict


def _setting(p: dict[str, str]) -> str:
    method = p["method"]
    if method == "secagg_sq":
        return f"secagg_sq {p['bits']}-bit"
    if method == "secagg_prune":
        return f"secagg_prune keep={float(p['keep']):g} {p['bits']}-bit"
    if method == "secagg_pq":
        return f"secagg_pq k={p['pq_codewords']} block={p['pq_block']}"
    if method == "dp":
        budget = f"eps={float(p['epsilon']):g}" if p.get("epsilon") not in (None, "None") else f"sigma={p['noise_multiplier']}"
        return f"dp {budget}"
    return method


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def report(uri: str | None, tier: str = "quick") -> None:
    from suite.tracking import Tracker

    groups: dict[str, list] = defaultdict(list)
    for run in Tracker(uri).runs("fl", status="FINISHED"):
        if run.tags.get("suite.tier") == tier:
            groups[_setting(run.params)].append(run.metrics)
    if not groups:
        print(f"no finished fl runs of the {tier} tier in the store")
        return
    header = (f"{'setting':32} {'seeds':>5} {'accuracy':>16} {'bytes/client/round':>19} {'secagg part':>12} "
              f"{'compression':>12} {'bits/param':>10} {'wall s':>8} {'start s':>8}")
    print(header)
    means = {}
    for name in sorted(groups, key=lambda n: -statistics.mean(m["bandwidth/uplink_bytes"] for m in groups[n])):
        rows = groups[name]
        acc, spread = _mean_std([m["utility/accuracy"] for m in rows])
        means[name] = (acc, statistics.mean(m["bandwidth/compression"] for m in rows))
        print(f"{name:32} {len(rows):5d} {acc:8.4f} ± {spread:.4f} "
              f"{statistics.mean(m['bandwidth/uplink_bytes'] for m in rows):19,.0f} "
              f"{statistics.mean(m['bandwidth/secagg_overhead_bytes'] for m in rows):12,.0f} "
              f"{means[name][1]:11.1f}x {statistics.mean(m['bandwidth/bits_per_parameter'] for m in rows):10.3f} "
              f"{statistics.mean(m['compute/wall_s'] for m in rows):8.1f} "
              f"{statistics.mean(m['compute/startup_s'] for m in rows):8.1f}")
    if "fedavg" in means:
        base = means["fedavg"][0]
        hits = [n for n, (a, c) in means.items() if c >= 32 and a >= base - 0.02]
        print(f"\ntarget (>= 32x, accuracy within 2 points of fedavg {base:.4f}): "
              + (", ".join(hits) if hits else "not met by any setting"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    parser.add_argument("--tier", default="quick")
    args = parser.parse_args()
    report(args.store, args.tier)


if __name__ == "__main__":
    main()
