"""The dpsgd task end to end on a few steps: its epsilon is the accountant's for what it really ran."""

from __future__ import annotations

import pytest

from runners.cell import Cell, execute
from suite.privacy import EPSILON_METRICS, dpsgd_epsilon
from suite.task import get_task

SMALL = {"epochs": 1, "train_subset": 256, "batch_size": 32, "audit_canaries": 0}  # no canaries: exact sizes


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ghost"])
def test_reported_epsilon_is_recomputed_from_the_run(mode: str) -> None:
    task = get_task("dpsgd")
    config = task.resolve("quick", {**SMALL, "grad_sample_mode": mode, "epsilon": 2.0})
    m = execute(Cell.make(task, "quick", config), threads=1).metrics
    assert m["privacy/steps"] == 8  # Poisson sampling: 1/q = 256/32 steps per epoch
    assert m["privacy/sample_rate"] == pytest.approx(32 / 256)
    expected = dpsgd_epsilon(history=[(m["privacy/noise_multiplier"], m["privacy/sample_rate"],
                                       int(m["privacy/steps"]))], delta=1e-5, accountant="rdp")
    assert m["privacy/epsilon"] == pytest.approx(expected, rel=1e-12)
    assert 1.9 <= m["privacy/epsilon"] <= 2.0  # calibrated to the target, never above it
    # The same noise, rate and steps under every accountant; the claim is the configured one's.
    history = [(m["privacy/noise_multiplier"], m["privacy/sample_rate"], int(m["privacy/steps"]))]
    for name, key in EPSILON_METRICS.items():
        assert m[key] == dpsgd_epsilon(history=history, delta=1e-5, accountant=name)
    assert m["privacy/epsilon"] == m["privacy/epsilon_rdp"]
    assert m["privacy/epsilon_pld"] <= m["privacy/epsilon_prv"] < m["privacy/epsilon_rdp"]
    assert 0 <= m["utility/accuracy"] <= 1
    assert m["compute/train_flops"] > 0 and m["compute/params"] == 6090


def test_prv_run_claims_the_prv_epsilon_and_is_tagged_poisson() -> None:
    task = get_task("dpsgd")
    config = task.resolve("quick", {**SMALL, "accountant": "prv", "epsilon": 3.0})
    m = execute(Cell.make(task, "quick", config), threads=1).metrics
    assert m["privacy/epsilon"] == m["privacy/epsilon_prv"] <= 3.0
    assert task().tags(config) == {"privacy.unit": "example", "privacy.accountant": "prv", "privacy.sampler": "poisson"}
    assert "privacy.sampler" not in task().tags(task.resolve("quick", {"method": "nonprivate"}))


def test_sample_rate_is_the_accountants_and_bounds_the_samplers() -> None:
    """93 batches an epoch: Opacus' sampler draws with 1/93, its loader runs 92 batches and its
    accountant uses 1/92 (1/(1/93) is 92.99999999999999 in floating point). The logged rate is the
    accountant's, at least the sampler's, and the epsilon is computed with it."""
    task = get_task("dpsgd")
    config = task.resolve("quick", {**SMALL, "train_subset": 186, "batch_size": 2, "epsilon": 8.0})
    m = execute(Cell.make(task, "quick", config), threads=1).metrics
    assert m["privacy/sample_rate"] == 1 / 92 > 1 / 93
    assert m["privacy/steps"] == 92
    assert m["privacy/epsilon"] == dpsgd_epsilon(history=[(m["privacy/noise_multiplier"], 1 / 92, 92)], delta=1e-5,
                                                 accountant="rdp")


def test_same_seed_same_result_across_grad_sample_modes() -> None:
    """hooks, functorch and ghost compute the same clipped gradients: same seed, same model."""
    task = get_task("dpsgd")
    acc = {mode: execute(Cell.make(task, "quick", task.resolve("quick", {**SMALL, "grad_sample_mode": mode})),
                         threads=1).metrics["utility/loss"] for mode in ("hooks", "functorch", "ghost")}
    assert acc["functorch"] == pytest.approx(acc["hooks"], rel=1e-4)
    assert acc["ghost"] == pytest.approx(acc["hooks"], rel=1e-4)


def test_nonprivate_run_has_no_privacy_metrics() -> None:
    task = get_task("dpsgd")
    m = execute(Cell.make(task, "quick", task.resolve("quick", {**SMALL, "method": "nonprivate"})), threads=1).metrics
    assert not any(k.startswith("privacy/") for k in m)
    assert task().privacy_unit(task.resolve("quick", {"method": "nonprivate"})) == "none"


def test_mnist_loader_reads_local_torchvision_files(tmp_path, monkeypatch) -> None:
    """The full tier's loader on a tiny MNIST written in torchvision's raw format (no download)."""
    import numpy as np

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 64), ("t10k", 16)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            np.array([0x803, n, 28, 28], dtype=">i4").tobytes() + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(np.array([0x801, n], dtype=">i4").tobytes() + labels.tobytes())
    monkeypatch.setenv("SUITE_DATA", str(tmp_path))
    task = get_task("dpsgd")
    config = task.resolve("full", {"epochs": 1, "batch_size": 16, "device": "cpu", "epsilon": 8.0, "audit_canaries": 0})
    m = execute(Cell.make(task, "full", config), threads=1).metrics
    assert m["privacy/sample_rate"] == pytest.approx(16 / 64)
    assert m["compute/params"] == sum([16 * 1 * 64 + 16, 32 * 16 * 16 + 32, 512 * 32 + 32, 32 * 10 + 10])


def test_missing_full_tier_data_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SUITE_DATA", str(tmp_path / "nowhere"))
    task = get_task("dpsgd")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        execute(Cell.make(task, "full", task.resolve("full", {"device": "cpu"})), threads=1)


DP_KEYS = ("epsilon", "delta", "max_grad_norm", "grad_sample_mode", "accountant")


def test_show_lists_only_the_methods_keys_and_run_refuses_another_methods_key(tmp_path) -> None:
    from tests.conftest import suite_cli

    shown = {method: suite_cli("show", "dpsgd", "--set", f"method={method}", cwd=tmp_path)
             for method in ("nonprivate", "dpsgd")}
    assert all(done.returncode == 0 for done in shown.values())
    resolved = {method: {line.split(":")[0] for line in done.stdout.splitlines()} for method, done in shown.items()}
    assert not set(DP_KEYS) & resolved["nonprivate"] and set(DP_KEYS) <= resolved["dpsgd"]
    assert {"lr", "audit_canaries", "device", "data_dir"} <= resolved["nonprivate"] & resolved["dpsgd"]
    done = suite_cli("run", "dpsgd", "--set", "method=nonprivate", "--set", "grad_sample_mode=ghost", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "key 'grad_sample_mode' is not a key of method nonprivate; methods that have it: dpsgd" in done.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_reference_of_dpsgd_is_nonprivate_with_the_shared_keys() -> None:
    task = get_task("dpsgd")
    config = task.resolve("quick", {"epsilon": 1.0, "lr": 0.25, "seed": 2, "grad_sample_mode": "ghost"})
    reference = task().reference(config)
    assert reference == task.resolve("quick", {"method": "nonprivate", "lr": 0.25, "seed": 2})
    assert task().reference(reference) is None
