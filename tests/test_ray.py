"""Sweeps on a real Ray cluster (a local head on loopback) logging to a real MLflow server on loopback.

Starting Ray and the MLflow server takes tens of seconds on a small machine: these tests are slow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.load import free_port, mlflow_server
from suite.tracking import Tracker

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head on 127.0.0.1 with 2 CPUs, in its own session (stopped by killing that session,
    never with ``ray stop``, which would stop every Ray instance of the machine's user)."""
    port = free_port()
    temp = Path("/tmp") / f"ray-suite-{os.getpid()}-{port}"  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                             "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    import socket

    while True:
        assert proc.poll() is None, "ray start exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "Ray head did not come up"
            time.sleep(0.5)
    yield address
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _kill_leftovers(str(temp))


def _kill_leftovers(temp: str) -> None:
    """Ray daemons of this head that outlived its session (they name its temp dir), by process id."""
    import psutil

    for p in psutil.process_iter(["pid", "cmdline"]):
        if any(temp in part for part in p.info["cmdline"] or []):
            try:
                p.kill()
            except psutil.Error:
                pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri


def _sweep(uri: str, cwd: Path, *args: str, popen: bool = False):  # noqa: ANN202
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    cmd = [sys.executable, "-m", "cli", "sweep", "toy", *args]
    if popen:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sweep_on_ray_logs_every_cell_once_to_the_server(ray_head, server, tmp_path: Path) -> None:
    done = _sweep(server, tmp_path, "--ray-address", ray_head, "--set", "sleep_s=0.2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 finished" in done.stdout
    runs = Tracker(server).runs("toy")
    assert len(runs) == 6 and all(r.status == "FINISHED" for r in runs)
    for run in runs:
        expected = float(run.params["value"]) + int(run.params["seed"]) / 100
        assert run.metrics["utility/accuracy"] == pytest.approx(expected)
        assert run.metrics["compute/steps"] == 4
        assert Tracker(server).client.get_metric_history(run.run_id, "utility/accuracy")[0].step == 1
    again = _sweep(server, tmp_path, "--ray-address", ray_head, "--set", "sleep_s=0.2")
    assert again.returncode == 0 and "6 cached" in again.stdout
    assert len(Tracker(server).runs("toy")) == 6


@pytest.mark.slow
def test_crash_and_timeout_on_ray_end_failed_with_the_reason(ray_head, server, tmp_path: Path) -> None:
    crash = _sweep(server, tmp_path, "--ray-address", ray_head, "--set", "method=crash", "--set", "seed=5")
    assert crash.returncode == 1 and "2 failed" in crash.stdout, crash.stdout + crash.stderr
    hang = _sweep(server, tmp_path, "--ray-address", ray_head, "--set", "method=hang", "--set", "seed=6",
                  "--timeout", "3")
    assert hang.returncode == 1 and "2 failed" in hang.stdout, hang.stdout + hang.stderr
    tracker = Tracker(server)
    failed = [r for r in tracker.runs("toy", status="FAILED") if r.params["seed"] in ("5", "6")]
    reasons = {r.params["method"]: r.tags["suite.failure_reason"] for r in failed}
    assert len(failed) == 4
    assert "planned crash" in reasons["crash"] and "timeout: killed after 3 s" in reasons["hang"]


@pytest.mark.slow
def test_sigterm_ends_ray_cells_killed(ray_head, server, tmp_path: Path) -> None:
    proc = _sweep(server, tmp_path, "--ray-address", ray_head, "--set", "method=hang", "--set", "seed=7",
                  popen=True)
    tracker = Tracker(server)
    deadline = time.monotonic() + 180

    def mine(status: str) -> list:
        # The seed tag is set when the run is created; its params follow in a second write, so a
        # RUNNING run read between the two has none yet.
        return [r for r in tracker.runs("toy", status=status) if r.tags["suite.seed"] == "7"]

    while len(mine("RUNNING")) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.5)
    time.sleep(2)  # the Ray tasks are running
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    killed = mine("KILLED")
    assert len(killed) == 2 and not mine("RUNNING")
    reasons = [r.tags["suite.failure_reason"] for r in killed]
    assert reasons == ["interrupted by SIGTERM"] * 2, reasons


def test_unreachable_ray_address_is_a_clear_error_in_seconds() -> None:
    import ray  # noqa: F401 - imported before the clock starts

    from runners.ray import connect
    from suite.errors import UsageError

    started = time.monotonic()
    with pytest.raises(UsageError, match=r"no Ray cluster answers at 127\.0\.0\.1:\d+ .*ray start --head"):
        connect(f"127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 15  # Ray's own client retries for minutes
