"""README's "Adding a task" is true: its files, written out as they stand, make a working family.

The files are taken from the README's code blocks (each announced by its path), written into a
temporary folder as the package ``mytask`` instead of ``tasks.mytask`` (the only change), and
driven through the command line as a user would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# a paragraph that starts with a file's path, then that file's code block
_BLOCK = re.compile(r"^`tasks/mytask/([^`]+\.(?:py|yaml))`(?:(?!```).)*?\n\n```(?:python|yaml)\n(.*?)```", re.S | re.M)


def _example_files() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Adding a task", 1)[1].split("\n## ", 1)[0]
    return {path: code for path, code in _BLOCK.findall(section)}


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    files = _example_files()
    assert set(files) == {"config.py", "methods/baseline.py", "methods/mine.py", "train.py", "task.py",
                          "configs/quick.yaml"}
    for name, code in {**files, "__init__.py": "", "methods/__init__.py": ""}.items():
        path = root / "mytask" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code.replace("tasks.mytask", "mytask"))
    return root


def _suite(family: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SUITE_TASK_MODULES": "mytask.task", "MLFLOW_TRACKING_URI": f"sqlite:///{family / 'mlflow.db'}",
           "PYTHONPATH": os.pathsep.join([str(family), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=family, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_example_shows_each_methods_keys_and_refuses_a_misplaced_one(family: Path) -> None:
    listed = _suite(family, "list")
    assert listed.returncode == 0 and "baseline, mine" in listed.stdout, listed.stdout + listed.stderr
    mine = _suite(family, "show", "mytask", "--set", "method=mine")
    assert mine.returncode == 0 and "epsilon" in mine.stdout, mine.stderr
    baseline = _suite(family, "show", "mytask")
    assert baseline.returncode == 0 and "epsilon" not in baseline.stdout
    refused = _suite(family, "run", "mytask", "--set", "epsilon=2")
    assert refused.returncode == 2
    assert "key 'epsilon' is not a key of method baseline; methods that have it: mine" in refused.stderr
    assert not (family / "mlflow.db").exists()


def test_the_example_runs_both_methods(family: Path) -> None:
    from suite.tracking import Tracker

    for method in ("baseline", "mine"):
        done = _suite(family, "run", "mytask", "--set", f"method={method}", "--set", "epochs=1")
        assert done.returncode == 0, done.stdout + done.stderr
    runs = {r.params["method"]: r for r in Tracker(f"sqlite:///{family / 'mlflow.db'}").runs("mytask")}
    assert runs["baseline"].tags["privacy.unit"] == "none" and "epsilon" not in runs["baseline"].params
    assert runs["mine"].tags["privacy.unit"] == "label" and runs["mine"].tags["privacy.accountant"] == "rr"
    assert runs["mine"].metrics["privacy/epsilon"] == pytest.approx(1.0)  # the default budget, from the keep rate
    assert 0.1 < runs["mine"].metrics["utility/accuracy"] <= runs["baseline"].metrics["utility/accuracy"] + 0.1
