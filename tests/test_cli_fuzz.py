"""Random configs fed to ``suite run`` for every registered task, as a user would type them.

The property: ``suite run`` exits 0, 1 or 2, never with an uncaught exception; a config that does
not validate exits 2 and prints the error without a Python traceback, writing nothing; one that
validates runs (exit 0, or 1 with a run recorded FAILED and its id printed, not a crashed command line).

Each example starts from the task's smoke overrides and a method, then sets one to three keys (real
keys, and a misspelled one) to random text, which ``--set`` reads as YAML: numbers of every size and
sign, ``inf``, ``nan``, ``1e400``, null, booleans, lists, mappings, dates and random unicode.

* The default run (a few derandomized examples per task) sends every config that does not validate
  to ``suite run`` and checks the refusal. A config that validates is sent to ``suite show``, which
  reads it exactly as ``suite run`` does and stops there: no training starts in the default run.
* The slow run (``-m slow``) sends every example to ``suite run``, valid ones included, each with a
  budget of ``BUDGET_S`` seconds: a run still going then is stopped with SIGTERM (recorded KILLED,
  exit 130) and the example counts as undecided rather than failed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from suite.config import parse_overrides
from suite.errors import UsageError
from suite.task import discover

TASKS = discover().names()
BUDGET_S = 60.0
_SPECIAL = ["inf", "-inf", "nan", ".inf", "-.inf", ".nan", "1e400", "-1e400", "null", "~", "", "true", "false",
            "[]", "[1, 2]", "{a: 1}", "'3'", "0", "-1", "1", "2", "2.5", "-0.0", "1e-300", "2020-01-01", "0x10",
            "1_000", "yes"]


def _values(task: type) -> st.SearchStrategy[str]:
    """YAML text for ``--set key=TEXT``: every type a user can type, and the task's own choices."""
    choices = sorted({str(v) for row in _allowed(task) for v in row})
    return st.one_of(
        st.sampled_from(_SPECIAL),
        st.integers(0, 5).map(str),  # small counts and sizes, often valid
        st.floats(0, 1).map(repr),  # rates, fractions, tolerances
        st.integers(-10**12, 10**12).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
        st.sampled_from(choices or ["x"]),
    )


def _allowed(task: type) -> list[tuple]:
    import typing

    out = []
    for info in task.Config.model_fields.values():
        stack = [info.annotation]
        while stack:
            annotation = stack.pop()
            if typing.get_origin(annotation) is typing.Literal:
                out.append(typing.get_args(annotation))
            stack.extend(typing.get_args(annotation) if typing.get_origin(annotation) is not typing.Literal else ())
    return out


@st.composite
def configs(draw: st.DrawFn, task: type) -> list[str]:
    """``--set`` pairs: the smoke overrides, a method, then 1-3 keys set to random text."""
    smoke = {k: v for k, v in task.tier("quick").smoke.items()}
    pairs = {k: _yaml(v) for k, v in smoke.items()}
    pairs["method"] = draw(st.sampled_from(task.methods()))
    keys = sorted(task.Config.model_fields) + ["epsilom", "train_subsets"]
    for _ in range(draw(st.integers(1, 3))):
        pairs[draw(st.sampled_from(keys))] = draw(_values(task))
    return [f"{k}={v}" for k, v in pairs.items()]


def _yaml(value: object) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _cli(*args: str, cwd: Path, budget: float | None = None) -> tuple[int, str, str]:
    """``python -m cli ARGS`` in ``cwd`` with its own store; SIGTERM after ``budget`` seconds."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=budget or 300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the suite records the run KILLED and exits 130
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        return -signal.SIGTERM, out, err
    return proc.returncode, out, err


def _validates(task: type, pairs: list[str]) -> bool:
    """Whether the config reads cleanly, as ``suite run`` reads it (in this process, no subprocess)."""
    try:
        task.resolve("quick", parse_overrides(pairs))
    except UsageError:
        return False
    return True  # any other exception escapes to the test: suite run would crash on it too


def _check_run(name: str, pairs: list[str], *, valid: bool, budget: float | None) -> None:
    """``suite run``: a config that reads cleanly here runs (exit 0 or 1), one that does not exits 2."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        cwd = Path(tmp)
        args = [a for p in pairs for a in ("--set", p)]
        rc, out, err = _cli("run", name, *args, cwd=cwd, budget=budget)
        shown = f"suite run {name} {' '.join(args)!r}\nexit {rc}\nstdout:\n{out}\nstderr:\n{err}"
        if rc == -signal.SIGTERM:
            return  # ran past its budget: stopped by us, not decided
        assert rc in ((0, 1) if valid else (2,)), shown
        if rc == 2:
            assert "Traceback" not in err and "error:" in err, shown
            assert not (cwd / "mlflow.db").exists() and not (cwd / "mlartifacts").exists(), shown
        if rc == 1:
            assert "run id:" in out, shown  # a run recorded FAILED, not an uncaught exception


def _check(name: str, pairs: list[str]) -> None:
    """Default run: refusals through ``suite run``, valid configs through ``suite show`` (no training)."""
    task = discover().get(name)
    if not _validates(task, pairs):
        _check_run(name, pairs, valid=False, budget=None)
        return
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        rc, out, err = _cli("show", name, *[a for p in pairs for a in ("--set", p)], cwd=Path(tmp))
        assert rc == 0 and "Traceback" not in err, f"suite show {name} {pairs}: exit {rc}\n{out}\n{err}"


@pytest.mark.parametrize("name", TASKS)
def test_random_configs_never_crash_suite_run(name: str) -> None:
    task = discover().get(name)

    @settings(max_examples=5, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(pairs=configs(task))
    def check(pairs: list[str]) -> None:
        _check(name, pairs)

    check()


@pytest.mark.slow
@pytest.mark.parametrize("name", TASKS)
def test_random_configs_run_for_real_within_a_budget(name: str) -> None:
    task = discover().get(name)

    @settings(max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(pairs=configs(task))
    def check(pairs: list[str]) -> None:
        _check_run(name, pairs, valid=_validates(task, pairs), budget=BUDGET_S)

    check()
