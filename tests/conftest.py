"""Shared fixtures: a fresh SQLite MLflow store per test, and the toy task registered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The toy task (planned crashes, NaNs and hangs) is registered through the same hook a
# researcher uses for tasks kept outside the repo. Set before any sweep starts its fork
# server, which inherits the environment.
os.environ["SUITE_TASK_MODULES"] = "tests.toy.task"
# Caches written by tests (labeldp's PATE teacher votes) go to a throwaway directory, not ~/.cache.
os.environ["SUITE_CACHE"] = tempfile.mkdtemp(prefix="suite-test-cache-")
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A tracker on an empty SQLite store in a temporary working directory."""
    from suite.tracking import Tracker

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return Tracker()


def suite_cli(*args: str, cwd: Path, timeout: float = 300, **popen: object) -> subprocess.CompletedProcess:
    """Run the ``suite`` command line in a subprocess, as a user would."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **popen)


def _default_sigint() -> None:
    # Ray, started in this test process by the fl and Ray tests, sets SIGINT to "ignore", and an
    # ignored signal stays ignored across exec: the child would never see Ctrl-C. A user's shell
    # starts `suite` with the default disposition; so does this.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def suite_popen(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    return subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_default_sigint)


def statuses(tracker, family: str) -> dict[str, list[str]]:
    """config hash -> statuses of its runs."""
    out: dict[str, list[str]] = {}
    for run in tracker.runs(family):
        out.setdefault(run.tags["suite.config_hash"], []).append(run.status)
    return out
