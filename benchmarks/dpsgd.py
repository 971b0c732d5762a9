"""Benchmark of the dpsgd quick tier: the figures asked of the suite's first task.

    .venv/bin/python -m benchmarks.dpsgd [--jobs 2] [--keep DIR]

1. Times ``make bench TASK=dpsgd`` on an empty store, then again with nothing changed (cached).
2. From the store: accuracy and epsilon per setting (mean and std over seeds), the DP-SGD
   slowdown over non-private training per grad-sample mode (median over seeds), and the
   suite's own overhead per run: the run's wall time in MLflow (opened -> ended, including
   the worker process, setup, logging) minus the time inside training and evaluation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _make_bench(workdir: Path, jobs: int) -> float:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    start = time.perf_counter()
    subprocess.run(["make", "-s", "bench", "TASK=dpsgd", f"JOBS={jobs}", f"SITE={workdir / 'site'}"], cwd=ROOT,
                   env=env, check=True)
    return time.perf_counter() - start


def _settings(run) -> str:
    p = run.params
    if p["method"] == "nonprivate":
        return "nonprivate"
    return f"dpsgd eps={float(p['epsilon']):g} {p['grad_sample_mode']} {p['accountant']}"


def report(workdir: Path) -> None:
    from suite.tracking import Tracker

    runs = Tracker(f"sqlite:///{workdir / 'mlflow.db'}").runs("dpsgd", status="FINISHED")
    groups: dict[str, list] = defaultdict(list)
    for run in runs:
        groups[_settings(run)].append(run)
    print(f"\n{'setting':34} {'seeds':>5} {'accuracy':>15} {'epsilon':>8} {'slowdown':>9} {'samples/s':>10}")
    for name in sorted(groups):
        rows = groups[name]
        acc = [r.metrics["utility/accuracy"] for r in rows]
        eps = [r.metrics.get("privacy/epsilon", float("nan")) for r in rows]
        slow = [r.metrics["compute/slowdown"] for r in rows if "compute/slowdown" in r.metrics]
        thr = [r.metrics["compute/throughput"] for r in rows]
        spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
        print(f"{name:34} {len(rows):5d} {statistics.mean(acc):8.4f} ± {spread:.4f} {statistics.mean(eps):8.3f} "
              f"{(statistics.median(slow) if slow else 1.0):8.2f}x {statistics.median(thr):10.0f}")
    overhead, wall, setup = [], [], []
    for run in runs:
        m = run.metrics
        run_wall = (run.end_time - run.start_time) / 1000
        wall.append(run_wall)
        overhead.append(run_wall - m["compute/train_s"] - m["compute/eval_s"])
        setup.append(m.get("compute/setup_s", 0.0))
    print(f"\nper run (median of {len(runs)}): wall {statistics.median(wall):.2f} s, "
          f"suite overhead (wall - train - eval) {statistics.median(overhead):.2f} s, "
          f"of which the task's own setup (data, model, noise calibration, FLOP count) "
          f"{statistics.median(setup):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="work in this folder (kept) instead of a temporary one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        first = _make_bench(workdir, args.jobs)
        second = _make_bench(workdir, args.jobs)
        print(f"\nmake bench TASK=dpsgd (jobs={args.jobs}, {os.cpu_count()} cores): first {first:.1f} s, "
              f"second (all cached) {second:.1f} s")
        report(workdir)


if __name__ == "__main__":
    main()
