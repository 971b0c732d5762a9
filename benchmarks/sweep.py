"""Benchmark of the whole quick sweep: where the time of ``make bench`` goes.

    .venv/bin/python -m benchmarks.sweep [--jobs 2] [--task dpsgd] [--keep DIR] [--report-only]

1. Runs ``make bench`` on an empty MLflow store and an empty ``SUITE_CACHE`` (and an empty
   TorchInductor cache), timing its wall and CPU seconds (the CPU of every process it started and
   waited for: the sweep, its workers, Ray's processes, the leaderboard), then once more with
   nothing changed (the cached rerun).
2. From the store, per family: cells, the span from its first cell's start to its last cell's end,
   cell-seconds (the sum of its runs' wall times), and the CPU seconds its cells' processes used
   (``compute/cpu_s``; work a cell hands to other processes, such as Ray's actors, is not in it,
   but is in the total).
3. The idle share of the workers: ``1 - cell-seconds / (jobs * sweep span)``.
4. The suite's own overhead per cell: the run's wall time in MLflow (opened -> ended: the worker
   process, MLflow writes, validation) minus the phases the task timed itself (``compute/<phase>_s``:
   set-up, training, evaluation...), and that overhead as a share of the median dpsgd cell. Of it,
   "runner s" is what lies outside the task's ``run`` altogether (``compute/wall_s``): the rest is
   the task's own code outside its timed phases.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_TOTAL_S = 600.0
TARGET_OVERHEAD = 0.03
TARGET_CACHED_S = 10.0


@dataclass
class Timed:
    wall_s: float
    cpu_s: float


def _adopt_orphans() -> None:
    """Become the Linux "subreaper" of every process ``make bench`` starts, so that processes which
    outlive their parent (a fork server, Ray's) are reaped here and their CPU time counted."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        print("not Linux: the CPU of processes that outlive their parent is not counted")


def _reap_orphans(timeout_s: float = 60.0) -> None:
    """Wait for the adopted processes still running (they exit once their parents are gone)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # none left
        if pid == 0:
            time.sleep(0.1)


def make_bench(workdir: Path, jobs: int, task: str) -> Timed:
    """``make bench`` against the store and caches in ``workdir``: its wall and CPU seconds."""
    _adopt_orphans()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
           "SUITE_CACHE": str(workdir / "cache"), "TORCHINDUCTOR_CACHE_DIR": str(workdir / "inductor"),
           "PYTHONPATH": str(ROOT)}  # this checkout's code, whichever one the venv was installed from
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(["make", "-s", "bench", f"TASK={task}", f"JOBS={jobs}", f"SITE={workdir / 'site'}"], cwd=ROOT,
                   env=env, check=True)
    wall = time.perf_counter() - start
    _reap_orphans()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(wall, cpu)


def _phase_seconds(run, family: str) -> float:
    """Seconds of the phases the task timed itself (its ``compute/<phase>_s`` metrics)."""
    from suite.schema import COMMON_METRICS
    from suite.task import get_task

    declared = set(get_task(family).metrics) | set(COMMON_METRICS)
    return sum(v for k, v in run.metrics.items()
               if k.startswith("compute/") and k.endswith("_s") and k not in declared)


def _wall(run) -> float:
    return (run.end_time - run.start_time) / 1000


def report(workdir: Path, jobs: int, cold: Timed | None = None, cached: Timed | None = None) -> dict[str, float]:
    """Print the tables; return the headline figures."""
    from suite.tracking import Tracker

    from suite.task import discover

    tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = [r for family in discover().names() for r in tracker.runs(family, status="FINISHED")]
    if not runs:
        raise SystemExit(f"no finished runs in {workdir / 'mlflow.db'}")
    by_family: dict[str, list] = defaultdict(list)
    for run in runs:
        by_family[run.tags["suite.task"]].append(run)

    print(f"\n{'family':14} {'cells':>5} {'span s':>8} {'cell-s':>8} {'CPU s':>8} {'median cell s':>14} "
          f"{'overhead s':>11} {'runner s':>9}")
    overheads: dict[str, list[float]] = {}
    for family, rows in sorted(by_family.items()):
        span = (max(r.end_time for r in rows) - min(r.start_time for r in rows)) / 1000
        walls = [_wall(r) for r in rows]
        overheads[family] = [_wall(r) - _phase_seconds(r, family) for r in rows]
        runner = [_wall(r) - r.metrics["compute/wall_s"] for r in rows]
        cpu = sum(r.metrics.get("compute/cpu_s", 0.0) for r in rows)
        print(f"{family:14} {len(rows):5d} {span:8.1f} {sum(walls):8.1f} {cpu:8.1f} {statistics.median(walls):14.2f} "
              f"{statistics.median(overheads[family]):11.3f} {statistics.median(runner):9.3f}")
    span = (max(r.end_time for r in runs) - min(r.start_time for r in runs)) / 1000
    busy = sum(_wall(r) for r in runs)
    idle = 1 - busy / (jobs * span)
    print(f"{'all':14} {len(runs):5d} {span:8.1f} {busy:8.1f} "
          f"{sum(r.metrics.get('compute/cpu_s', 0.0) for r in runs):8.1f}")
    figures = {"cells": float(len(runs)), "sweep_span_s": span, "idle_share": idle}
    print(f"\nworkers: {jobs}, idle share over the sweep's span {idle:.1%}")
    if "dpsgd" in by_family:
        median_cell = statistics.median(_wall(r) for r in by_family["dpsgd"])
        overhead = statistics.median(overheads["dpsgd"])
        figures["overhead_share"] = overhead / median_cell
        print(f"suite overhead per dpsgd cell (median): {overhead:.3f} s = {overhead / median_cell:.1%} of the median "
              f"dpsgd cell ({median_cell:.2f} s); target {TARGET_OVERHEAD:.0%}")
    if cold:
        figures.update(total_s=cold.wall_s, total_cpu_s=cold.cpu_s)
        print(f"make bench from an empty store and cache: {cold.wall_s:.1f} s wall ({cold.wall_s / 60:.1f} min; "
              f"target {TARGET_TOTAL_S / 60:.0f} min), {cold.cpu_s:.0f} CPU-s in all its processes")
    if cached:
        figures["cached_s"] = cached.wall_s
        print(f"make bench again, nothing changed: {cached.wall_s:.1f} s (target {TARGET_CACHED_S:.0f} s)")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--task", default="", help="one family (default: every family, as make bench)")
    parser.add_argument("--keep", type=Path, help="work in this folder (kept) instead of a temporary one")
    parser.add_argument("--report-only", action="store_true", help="only report on the store kept in --keep")
    args = parser.parse_args()
    if args.report_only and not args.keep:
        parser.error("--report-only reads the store of an earlier run: give its folder with --keep")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or Path(tmp)
        if args.report_only:
            report(workdir, args.jobs)
            return
        if workdir.exists() and any(workdir.iterdir()):
            parser.error(f"--keep {workdir}: not empty; the benchmark starts from an empty store and cache")
        workdir.mkdir(parents=True, exist_ok=True)
        cold = make_bench(workdir, args.jobs, args.task)
        cached = make_bench(workdir, args.jobs, args.task)
        report(workdir, args.jobs, cold, cached)


if __name__ == "__main__":
    main()
