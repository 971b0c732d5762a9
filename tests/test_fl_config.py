"""fl configs: values that would fail inside a run are refused when the config is read.

The SecAgg+ rules are checked against Flower itself: each (num_shares, threshold, clients)
case runs one real round of Flower's SecAgg+ over an in-process Grid, and the round must
complete exactly when the config rule accepts the values.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from tasks.fl.rules import SecAggSizes, check_secagg, secagg_sizes
from tasks.fl.task import FLTask
from tests.conftest import suite_cli
from tests.fl_loopback import federate, fixed_clients, server_process  # noqa: F401 - a fixture

# (num_shares, threshold, clients per round)
ACCEPTED = [(0.5, 0.6, 5), (1.0, 1.0, 5), (3, 2, 5), (5, 4, 5), (6, 0.6, 5), (0.2, 0.6, 5), (4, 0.6, 3),
            (4, 3, 4), (1.0, 2, 2)]
REFUSED = [(2, 0.6, 5), (4, 0.6, 5), (3, 3, 5), (7, 6, 5), (0.5, 5, 5), (0.5, 4, 5)]


def _flower_round(num_shares: float, threshold: float, clients: int) -> bool:
    """Whether one round of Flower's SecAgg+ (the ``secagg`` method) completes with these values."""
    from flwr.client.mod import secaggplus_mod

    # Unvalidated on purpose: the point is what Flower does with values the config would refuse.
    config = FLTask.config_model("secagg").model_construct(method="secagg", seed=0, num_clients=clients, clients_per_round=clients,
                                      rounds=1, num_shares=float(num_shares), threshold=float(threshold))
    updates = {p: np.full(8, 0.01 * (p + 1), dtype=np.float32) for p in range(clients)}
    try:
        record, _, evaluated = federate(config, fixed_clients(updates, dict.fromkeys(updates, 1), set(), [secaggplus_mod]),
                                        initial=[np.zeros(8, dtype=np.float32)])
    except Exception:  # noqa: BLE001 - Flower refused the values, or the round aborted
        return False
    return record.error is None and len(evaluated) == 2 and bool(np.abs(evaluated[1][0]).max() > 0)


def _accepted(num_shares: float, threshold: float, clients: int) -> bool:
    try:
        check_secagg(num_shares, threshold, clients)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("num_shares, threshold, clients", ACCEPTED + REFUSED)
def test_the_secagg_rules_accept_exactly_what_a_flower_round_completes(num_shares: float, threshold: float,
                                                                      clients: int, server_process) -> None:
    accepted = _accepted(num_shares, threshold, clients)
    assert accepted == ((num_shares, threshold, clients) in ACCEPTED)
    assert _flower_round(num_shares, threshold, clients) == accepted


def test_secagg_sizes_follow_flowers_setup_stage() -> None:
    assert secagg_sizes(0.5, 0.6, 10) == SecAggSizes(5, 3, 5)  # the quick tier: neighbourhoods of 5, threshold 3
    assert secagg_sizes(0.5, 0.6, 4) == SecAggSizes(3, 2, 3)  # round(2.0) = 2 is even: 3
    assert secagg_sizes(0.2, 0.6, 5) == SecAggSizes(5, 3, 5)  # 1 share is too few: every client
    assert secagg_sizes(6, 0.6, 5) == SecAggSizes(6, 4, 5)  # an even count above the round's size: all clients


@pytest.mark.parametrize("overrides, key", [
    (["num_shares=2"], "num_shares: a count must be at least 3"),
    (["num_shares=4"], "num_shares: an even count below clients_per_round"),
    (["threshold=7"], "threshold: 7.0 asks for 7 shares"),
    (["method=dp", "weighting=examples"], "key 'weighting' is not a key of method dp; methods that have it: "),
    (["method=fedavg", "keep=0.5"], "key 'keep' is not a key of method fedavg; methods that have it: secagg_prune"),
    (["weighting=examples"], "max_weight: weighting examples needs a cap"),
    (["client_cpus=3"], "client_cpus: each simulated client asks Ray for 3.0 CPUs"),
], ids=["shares-2", "shares-even", "threshold", "dp-weighting", "fedavg-keep", "examples-cap", "cpus"])
def test_the_cli_refuses_before_anything_runs(tmp_path, overrides: list[str], key: str) -> None:
    done = suite_cli("run", "fl", *(f"--set={o}" for o in overrides), cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert key in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no store, no artifacts


@pytest.mark.parametrize("values, message", [
    ({"threshold": 2.5}, "threshold: a fraction"),
    ({"method": "dp", "epsilon": 0.01}, "epsilon: 0.01 is below .*the smallest target the RDP calibration can reach"),
    ({"hidden": [64, 0]}, "greater than or equal to 1"),
    ({"num_clients": 400, "clients_per_round": 10}, "num_clients: digits has 1347 training images"),
    ({"lr": float("inf")}, "finite number"),
    ({"method": "secagg", "dataset": "femnist", "num_clients": 2000, "clients_per_round": 1500},
     "clients_per_round: method secagg"),
    ({"client_gpus": 0.5, "device": "cpu"}, "client_gpus"),
    ({"method": "dp", "epsilon": None, "noise_multiplier": 0.0}, "noise_multiplier"),
], ids=["threshold-fraction", "dp-epsilon", "hidden", "digits-clients", "lr-inf", "secagg-overflow", "gpus",
        "dp-no-noise"])
def test_values_that_would_fail_in_a_run_are_refused(values: dict, message: str) -> None:
    method = values.get("method", "secagg_sq")
    base = {"delta": 1e-3, "clip_norm": 0.5, "epsilon": 8.0} if method == "dp" else {}
    with pytest.raises(ValidationError, match=message):
        FLTask.config_model(method)(**{"device": "cpu", **base, **values})


def test_max_weight_goes_with_examples_weighting_only() -> None:
    fedavg = FLTask.config_model("fedavg")
    assert fedavg(weighting="examples", max_weight=64).client_weight_cap() == 64
    assert fedavg(weighting="uniform").client_weight_cap() == 1
    with pytest.raises(ValidationError, match="max_weight: only with weighting examples"):
        fedavg(weighting="uniform", max_weight=64)
    with pytest.raises(ValidationError, match="max_weight: weighting examples needs a cap"):
        fedavg(weighting="examples")


def test_examples_weighting_widens_the_field() -> None:
    sq = FLTask.config_model("secagg_sq")
    narrow = {"bits": 1, "clients_per_round": 10}
    assert sq(**narrow, field_bits=4)  # 10 x 1 < 16
    with pytest.raises(ValidationError, match="4-bit field overflows: 10 clients x 64"):
        sq(**narrow, field_bits=4, weighting="examples", max_weight=64)
    assert sq(**narrow, field_bits=10, weighting="examples", max_weight=64)  # 10 x 64 < 1024


def test_show_lists_only_the_methods_keys_and_refuses_another_methods(tmp_path) -> None:
    dp = suite_cli("show", "fl", "--set=method=dp", cwd=tmp_path, timeout=120)
    assert dp.returncode == 0, dp.stderr[-2000:]
    assert "clip_norm" in dp.stdout and "num_shares" not in dp.stdout and "weighting" not in dp.stdout
    refused = suite_cli("show", "fl", "--set=method=dp", "--set=bits=1", cwd=tmp_path, timeout=120)
    assert refused.returncode == 2
    assert "key 'bits' is not a key of method dp; methods that have it: secagg_prune, secagg_sq" in refused.stderr
    deploy = suite_cli("deploy", "fl", "--smoke", "--set=method=fedavg", "--set=range=0.1", cwd=tmp_path, timeout=120)
    assert deploy.returncode == 2 and "methods that have it: secagg_pq, secagg_prune, secagg_sq" in deploy.stderr
    assert list(tmp_path.iterdir()) == []  # nothing started or written


def test_the_ray_head_gets_the_configs_cpus() -> None:
    assert FLTask().ray_cpus(FLTask.resolve("quick", {"method": "fedavg", "ray_cpus": 3, "client_cpus": 1.5})) == 3
