"""Benchmark table of the memorization family, read from a store.

    .venv/bin/python -m benchmarks.memorization [--store sqlite:///mlflow.db] [--tier quick]

Per setting (training method, epsilon, variant), means over seeds: exposure per repetition count
r (skew-normal fit; "±" is the spread over the canaries of one run, averaged over seeds), the
in-sample rank version, extraction per r, perplexity, epsilon by the three accountants, the one-run
audit's lower bound, and the CPU seconds of the cells (training included where the cell trained the
model); then the family's CPU seconds in all.
"""

from __future__ import annotations

import argparse
import re
import statistics
from collections import defaultdict

_VARIANTS = ("fp32", "bf16", "int8", "fp8_rowwise", "pruned50")


def _setting(p: dict[str, str]) -> tuple[str, float, int]:
    eps = float(p["epsilon"]) if p.get("epsilon") not in (None, "None", "null", "") else 0.0
    name = f"dpsgd eps={eps:g}" if p["method"] == "dpsgd" else "nonprivate"
    variant = p.get("variant", "?")
    return name, eps, _VARIANTS.index(variant) if variant in _VARIANTS else 99


def _mean(rows: list[dict[str, float]], key: str) -> float:
    values = [m[key] for m in rows if key in m]
    return statistics.mean(values) if values else float("nan")


def report(uri: str | None, tier: str = "quick") -> None:
    from suite.tracking import Tracker

    groups: dict[tuple, list] = defaultdict(list)
    for run in Tracker(uri).runs("memorization", status="FINISHED"):
        if run.tags.get("suite.tier") == tier:
            key = (*_setting(run.params), run.params.get("variant", "?"))
            groups[key].append(run.metrics)
    if not groups:
        print(f"no finished memorization runs of the {tier} tier in the store")
        return
    reps = sorted({int(m.group(1)) for rows in groups.values() for k in rows[0]
                   if (m := re.fullmatch(r"privacy/exposure_r(\d+)", k))})
    print(f"{'setting':28} {'seeds':>5} " + " ".join(f"{'exp r' + str(r):>13}" for r in reps) + "  "
          + " ".join(f"{'rank r' + str(r):>8}" for r in reps) + "  "
          + " ".join(f"{'ext r' + str(r):>6}" for r in reps)
          + f" {'ppl':>8} {'eps rdp/prv/pld':>17} {'audit lb':>8} {'cpu s':>7}")
    total = 0.0
    for key in sorted(groups, key=lambda k: (k[1] == 0, k[1], k[2])):
        rows = groups[key]
        total += sum(m["compute/cpu_s"] for m in rows)
        exposure = " ".join(f"{_mean(rows, f'privacy/exposure_r{r}'):6.2f} ± {_mean(rows, f'privacy/exposure_r{r}_std'):4.1f}"
                            for r in reps)
        ranked = " ".join(f"{_mean(rows, f'privacy/exposure_rank_r{r}'):8.2f}" for r in reps)
        extracted = " ".join(f"{_mean(rows, f'privacy/extraction_r{r}'):6.2f}" for r in reps)
        eps = "/".join(f"{_mean(rows, f'privacy/epsilon_{a}'):.2f}" for a in ("rdp", "prv", "pld"))
        print(f"{key[0] + ' ' + key[3]:28} {len(rows):5d} {exposure}  {ranked}  {extracted} "
              f"{_mean(rows, 'utility/perplexity'):8.1f} {eps if 'privacy/epsilon' in rows[0] else '-':>17} "
              f"{_mean(rows, 'privacy/audit_epsilon_lb'):8.2f} {_mean(rows, 'compute/cpu_s'):7.1f}")
    print(f"\nCPU seconds of all {sum(len(r) for r in groups.values())} cells: {total:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    parser.add_argument("--tier", default="quick")
    args = parser.parse_args()
    report(args.store, args.tier)


if __name__ == "__main__":
    main()
