"""The fl server: seeded sampling by partition, repeatable runs, the dp mechanism, the byte meter.

Everything runs Flower's real ServerApp and ClientApps over an in-process Grid
(:mod:`tests.fl_loopback`), with node ids drawn at random as Flower draws them.
"""

from __future__ import annotations

import numpy as np
import pytest

from tasks.fl.strategy import sample_partitions
from tasks.fl.task import FLTask
from tests.fl_loopback import federate, fixed_clients, random_node_ids, server_process  # noqa: F401 - a fixture


def _real_run(node_seed: int, **overrides):  # type: ignore[no-untyped-def]
    """A small config of the quick tier, run with the real clients on digits; node ids from ``node_seed``."""
    import torch

    from tasks.fl.apps import ClientSpec, build_model, client_app, get_weights
    from tasks.fl.config import method_of
    from tasks.fl.data import load

    smoke = FLTask.tier("quick").smoke
    config = FLTask.resolve("quick", {**smoke, "num_clients": 4, "clients_per_round": 3, "rounds": 3, **overrides})
    partitions, _ = load(config.dataset, config.num_clients, config.alpha, config.split_seed, config.data_dir)
    torch.manual_seed(config.seed)
    initial = get_weights(build_model(config.dataset, tuple(config.hidden)))
    spec = ClientSpec(config.dataset, tuple(config.hidden), partitions, config.local_epochs, config.batch_size,
                      config.lr, config.seed, "cpu", weight_cap=config.client_weight_cap())
    method = method_of(config)
    app = client_app(spec, method.client_mods(config), config.dropout)
    record, _, evaluated = federate(config, dict.fromkeys(range(config.num_clients), app), initial=initial,
                                    plan=method.round_plan(config, initial), noise_multiplier=method.noise_multiplier(config),
                                    node_ids=random_node_ids(config.num_clients, node_seed))
    assert record.error is None
    return record, evaluated


RERUNS = [{"method": "fedavg"}, {"method": "fedavg", "weighting": "examples", "max_weight": 256}, {"method": "secagg"},
          {"method": "secagg_sq", "bits": 2, "dropout": 0.3}, {"method": "secagg_pq"},
          {"method": "dp", "epsilon": None, "noise_multiplier": 0.5}]


@pytest.mark.parametrize("overrides", RERUNS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_one_config_and_seed_give_one_result_whatever_the_node_ids(overrides: dict, server_process) -> None:
    """Flower draws new node ids every run; rounding, dropouts, sampling and dp noise follow the partition."""
    first, weights_a = _real_run(1, **overrides)
    second, weights_b = _real_run(2, **overrides)
    assert set(first.strategy.partition_of) != set(second.strategy.partition_of)  # other node ids
    assert first.strategy.samples == second.strategy.samples
    for a, b in zip(weights_a, weights_b, strict=True):  # every round's global model, bit for bit
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    assert not np.array_equal(weights_a[0][0], weights_a[-1][0])  # and it trained


def test_two_methods_with_one_seed_train_the_same_clients(server_process) -> None:
    fedavg, _ = _real_run(1, method="fedavg", seed=4)
    secagg, _ = _real_run(2, method="secagg_sq", seed=4)
    other, _ = _real_run(1, method="fedavg", seed=5)
    assert fedavg.strategy.samples == secagg.strategy.samples != other.strategy.samples
    assert all(len(s) == 3 for s in fedavg.strategy.samples.values())


def test_fixed_size_and_poisson_sampling() -> None:
    fixed = [sample_partitions(seed=0, rnd=r, num_clients=20, clients_per_round=10, sampler="fixed_size")
             for r in range(1, 2001)]
    assert all(len(s) == len(set(s)) == 10 for s in fixed)
    poisson = [sample_partitions(seed=0, rnd=r, num_clients=20, clients_per_round=5, sampler="poisson")
               for r in range(1, 2001)]
    sizes = np.array([len(s) for s in poisson])
    assert abs(sizes.mean() - 5) < 0.15 and sizes.min() <= 1 and sizes.max() >= 10  # Binomial(20, 0.25)
    per_client = np.bincount(np.concatenate([np.asarray(s, dtype=int) for s in poisson]), minlength=20) / 2000
    assert np.all(np.abs(per_client - 0.25) < 0.04)  # each client independently with q = 0.25


def _seed_with_an_empty_round(rounds: int) -> int:
    for seed in range(1000):
        sizes = [len(sample_partitions(seed=seed, rnd=r, num_clients=5, clients_per_round=2, sampler="poisson"))
                 for r in range(1, rounds + 1)]
        if 0 in sizes and min(s for s in sizes if s) >= 2:
            return seed
    raise AssertionError("no seed gives an empty round")


def test_dp_noise_matches_the_fixed_denominator_sensitivity_in_every_round_an_empty_one_included(server_process) -> None:
    """DP-FedAvg with Poisson sampling: the mean is the clipped updates' sum over clients_per_round,
    plus Gaussian noise of std noise_multiplier * clip_norm / clients_per_round, in every round."""
    rounds, dim, clip, sigma = 6, 4000, 0.5, 0.8
    seed = _seed_with_an_empty_round(rounds)
    config = FLTask.config_model("dp")(method="dp", seed=seed, num_clients=5, clients_per_round=2, rounds=rounds, noise_multiplier=sigma,
                      clip_norm=clip, delta=1e-3)
    rng = np.random.default_rng(1)
    updates = {p: (v * 2 * clip / np.linalg.norm(v)).astype(np.float32)  # twice the clip norm: clipped to it
               for p in range(5) if (v := rng.normal(size=dim)) is not None}
    clients = fixed_clients(updates, dict.fromkeys(updates, 1), set(), [])
    record, _, evaluated = federate(config, clients, initial=[np.zeros(dim, dtype=np.float32)],
                                    noise_multiplier=sigma)
    assert record.error is None
    samples = record.strategy.samples
    assert any(not s for s in samples.values())
    for rnd in range(1, rounds + 1):
        moved = evaluated[rnd][0].astype(np.float64) - evaluated[rnd - 1][0]
        expected = sum(updates[p] * 0.5 for p in samples[rnd]) / 2 if samples[rnd] else 0.0
        noise = moved - expected
        assert noise.std() == pytest.approx(sigma * clip / 2, rel=0.05), (rnd, samples[rnd])
        assert abs(noise.mean()) < 4 * sigma * clip / 2 / np.sqrt(dim)


def test_uplink_counts_completed_clients_and_dropped_bytes_apart(server_process) -> None:
    from tasks.fl.meter import uplink_summary
    from tests.test_fl import secagg_round

    record, _, _, _, _ = secagg_round({"codec_kind": "sq", "bits": 2, "range": 0.05}, {0, 1})
    entries = list(record.meter.bytes.values())
    completed = [e for e in entries if e["payload"]]
    dropped = [e for e in entries if not e["payload"]]
    assert len(completed) == 3 and len(dropped) == 2 and all(e["overhead"] > 0 for e in dropped)
    summary = uplink_summary(entries, rounds=1)
    assert summary["bandwidth/uplink_bytes"] == np.mean([e["payload"] + e["overhead"] for e in completed])
    assert summary["bandwidth/dropped_bytes"] == sum(e["overhead"] for e in dropped)
    # counting the dropped clients' keys and shares as replies would have lowered the bytes per client
    assert np.mean([e["payload"] + e["overhead"] for e in entries]) < summary["bandwidth/uplink_bytes"]
