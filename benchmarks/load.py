"""Load test of the sweep runner: many tiny cells, 2 parallel jobs, against a SQLite store and an MLflow server.

    python -m benchmarks.load [--task toyload] [--jobs 2] [--backend sqlite server] [--ray-address ADDR]

``toyload`` is a test task (tests/toy/task.py, registered through ``SUITE_TASK_MODULES``) with 200
instant cells. For each backend the sweep runs in a fresh store; afterwards every cell must
have exactly one run, FINISHED, with its metric (no lost and no duplicated runs). Reports
cells per minute, wall time of the whole ``suite sweep`` command included (interpreter and
MLflow start-up, planning, writes).

The MLflow server is started here on loopback (``mlflow server`` with a SQLite back end and
proxied artifacts, on a free port) and stopped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(workdir: Path, timeout_s: float = 300) -> Iterator[str]:
    """An ``mlflow server`` on loopback with a SQLite back end in ``workdir``; yields its URI."""
    import requests

    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "server.log", "w")  # noqa: SIM115 - closed below
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{workdir / 'server.db'}",
           "--artifacts-destination", str(workdir / "artifacts"), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({proc.returncode}); see {workdir / 'server.log'}")
            try:
                if requests.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not up after {timeout_s:g} s; see {workdir / 'server.log'}")
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, 15)  # the server and its workers (own session)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()


def sweep(task: str, uri: str, cwd: Path, *args: str, timeout_s: float = 1800) -> tuple[float, str]:
    """``suite sweep TASK ARGS`` against ``uri``; returns (wall seconds, output)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "SUITE_TASK_MODULES": os.environ.get("SUITE_TASK_MODULES") or "tests.toy.task",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cli", "sweep", task, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout_s)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"sweep failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return wall, done.stdout


def check_store(uri: str, task: str) -> dict[str, int]:
    """Runs per cell of ``task``'s quick grid: lost (no FINISHED run), duplicated (more than one run)."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("SUITE_TASK_MODULES", "tests.toy.task")  # before the registry is first read
    from runners.sweep import plan
    from suite.task import get_task
    from suite.tracking import Tracker

    cells = {c.hash: c for c in plan([get_task(task)], "quick")}
    runs = Tracker(uri).runs(task)
    by_hash: dict[str, list] = {}
    for run in runs:
        by_hash.setdefault(run.tags.get("suite.config_hash"), []).append(run)
    lost = [h for h in cells if not any(r.status == "FINISHED" for r in by_hash.get(h, []))]
    duplicated = [h for h, rs in by_hash.items() if len(rs) > 1]
    foreign = [h for h in by_hash if h not in cells]
    wrong = [r.run_id for r in runs if r.status == "FINISHED" and "utility/accuracy" not in r.metrics]
    return {"cells": len(cells), "runs": len(runs), "lost": len(lost), "duplicated": len(duplicated),
            "foreign": len(foreign), "missing_metric": len(wrong)}


def load_test(backend: str, *, task: str = "toyload", jobs: int = 2, workdir: Path,
              ray_address: str | None = None) -> dict[str, object]:
    """One load test: the sweep of ``task`` into a fresh store of ``backend`` (sqlite or server)."""
    workdir.mkdir(parents=True, exist_ok=True)
    extra = ["--jobs", str(jobs)] + (["--ray-address", ray_address] if ray_address else [])

    def measure(uri: str) -> dict[str, object]:
        wall, _ = sweep(task, uri, workdir, *extra)
        counts = check_store(uri, task)
        again, out = sweep(task, uri, workdir, *extra)  # a second sweep must find every cell FINISHED
        return {"backend": backend, "runner": "ray" if ray_address else "local", "jobs": jobs, **counts,
                "wall_s": round(wall, 1), "cells_per_min": round(counts["cells"] / wall * 60, 1),
                "second_sweep_cached": f"{counts['cells']} cached" in out, "second_sweep_s": round(again, 1)}

    if backend == "sqlite":
        return measure(f"sqlite:///{workdir / 'mlflow.db'}")
    with mlflow_server(workdir / "server") as uri:
        return measure(uri)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="toyload")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--backend", nargs="+", default=["sqlite", "server"], choices=["sqlite", "server"])
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--keep", type=Path, default=None, help="keep the stores in this folder")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="suite-load-"))
    results = [load_test(b, task=args.task, jobs=args.jobs, workdir=root / b, ray_address=args.ray_address)
               for b in args.backend]
    for r in results:
        print(json.dumps(r))
    bad = [r for r in results if r["lost"] or r["duplicated"] or r["missing_metric"] or not r["second_sweep_cached"]]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
