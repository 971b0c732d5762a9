"""The one-run audit of dpsgd catches planted bugs in DP-SGD and stays below an honest claim.

The audit setting makes canaries easy to memorize (few examples, many epochs, momentum, a
large learning rate): with the Gaussian noise removed or scaled for the wrong batch size,
the model fits the wrong labels of the included canaries and the bound exceeds the claim;
with the noise Opacus calibrated for the claim, it stays below.
"""

from __future__ import annotations

import opacus.optimizers.optimizer as opacus_optimizer
import pytest
import torch

from runners.cell import Cell, execute
from suite.errors import ConfigError
from suite.task import get_task

CLAIM = 1.0
AUDIT = {"method": "dpsgd", "epsilon": CLAIM, "train_subset": 300, "audit_canaries": 100, "epochs": 50,
         "batch_size": 64, "lr": 2.0, "momentum": 0.9}


def _run(**overrides: object) -> dict[str, float]:
    task = get_task("dpsgd")
    config = task.resolve("quick", {**AUDIT, **overrides})
    return execute(Cell.make(task, "quick", config), threads=1).metrics


def _plant(monkeypatch: pytest.MonkeyPatch, scale: float) -> None:
    """Scale the noise DP-SGD adds, behind the accountant's back (it still sees the calibrated sigma)."""
    honest = opacus_optimizer._generate_noise

    def noise(std, reference, generator=None, secure_mode=False):  # noqa: ANN001, ANN202 - Opacus' signature
        if scale == 0:
            return torch.zeros_like(reference)
        return honest(std * scale, reference, generator, secure_mode)

    monkeypatch.setattr(opacus_optimizer, "_generate_noise", noise)


def test_honest_run_stays_below_its_claim() -> None:
    m = _run()
    assert m["privacy/epsilon"] == pytest.approx(CLAIM, abs=0.02)
    assert m["privacy/audit_canaries"] == 100 and m["privacy/audit_guesses"] == 50
    assert m["privacy/audit_epsilon_lb"] < m["privacy/epsilon"]


def test_noise_for_the_wrong_batch_size_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # The classic bug: noise calibrated for the averaged gradient (std sigma*C/B) added to the sum.
    _plant(monkeypatch, 1 / AUDIT["batch_size"])
    m = _run()
    assert m["privacy/epsilon"] == pytest.approx(CLAIM, abs=0.02)  # the accountant is none the wiser
    assert m["privacy/audit_epsilon_lb"] > m["privacy/epsilon"]


@pytest.mark.slow
def test_noise_off_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    _plant(monkeypatch, 0.0)
    m = _run(seed=1)
    assert m["privacy/audit_epsilon_lb"] > m["privacy/epsilon"]


@pytest.mark.slow
def test_honest_run_of_another_seed_stays_below_its_claim() -> None:
    m = _run(seed=1)
    assert m["privacy/audit_epsilon_lb"] < m["privacy/epsilon"]


@pytest.mark.parametrize(("overrides", "rule"), [
    ({"audit_canaries": 10, "audit_guesses": 20}, r"audit_guesses \(20\) cannot exceed audit_canaries \(10\)"),
    ({"audit_canaries": 1}, "audit_canaries must be 0 .no audit. or at least 2"),
    ({"audit_canaries": 0, "audit_guesses": 2}, "audit_guesses .2. cannot exceed audit_canaries .0."),
    ({"train_subset": 100, "audit_canaries": 51}, r"audit_canaries \(51\) can be at most half the 100 training"),
    ({"audit_canaries": 719}, r"at most half the 1437 training examples of digits"),
    ({"method": "nonprivate", "audit_canaries": 1}, "audit_canaries must be 0"),
])
def test_audit_settings_that_cannot_work_are_refused_when_read(overrides: dict, rule: str) -> None:
    with pytest.raises(ConfigError, match=rule):
        get_task("dpsgd").resolve("quick", overrides)


def test_largest_audit_the_rules_allow_runs() -> None:
    """At the bounds: 2 canaries with their 2 guesses, and half of a 20-example training set."""
    task = get_task("dpsgd")
    for overrides in ({"audit_canaries": 2}, {"audit_canaries": 10, "audit_guesses": 10}):
        config = task.resolve("quick", {"train_subset": 20, "epochs": 1, **overrides})
        m = execute(Cell.make(task, "quick", config), threads=1).metrics
        assert m["privacy/audit_canaries"] == overrides["audit_canaries"] and m["privacy/audit_guesses"] >= 2
    assert task.resolve("quick", {"audit_canaries": 718}).audit_canaries == 718  # 1437 // 2
