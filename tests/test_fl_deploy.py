"""The fl task on Flower's Deployment Engine: a real SuperLink and SuperNodes on 127.0.0.1.

The slow test starts ``flower-superlink`` and three ``flower-supernode`` processes (insecure,
loopback only, a temporary FLWR_HOME), submits one round of ``secagg_sq`` with ``flwr run``, and
checks what came back against a local recomputation: each client's update is retrained here
from the same data and seed, encoded with the node's own rounding seed, and the sum must equal
the unmasked sum the ServerApp saw, bit for bit; the new global model must be its decoded mean.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from runners.flower_deploy import DeploymentError, Federation, check_port_free
from tasks.fl.deploy_app import _partition, run_config
from tasks.fl.deployed import deployed_metrics, run_deployed
from tasks.fl.task import FLTask


def _context(run_config: dict, node_config: dict | None = None) -> Context:
    return Context(run_id=1, node_id=7, node_config=node_config or {}, state=RecordDict(), run_config=run_config)


# -- in process: the apps' config and partition checks -------------------------------------------


def test_the_run_config_resolves_like_the_suite() -> None:
    overrides = '{"method": "secagg_pq", "num_clients": 5, "clients_per_round": 3}'
    config = run_config(_context({"tier": "quick", "smoke": True, "overrides": overrides, "result-dir": ""}))
    smoke = FLTask.tier("quick").smoke
    assert config == FLTask.resolve("quick", {**smoke, "method": "secagg_pq", "num_clients": 5, "clients_per_round": 3})
    with pytest.raises(ValueError, match="JSON object"):
        run_config(_context({"tier": "quick", "smoke": False, "overrides": "[1, 2]"}))


@pytest.mark.parametrize("node_config, message", [
    ({}, "no 'partition-id'"),
    ({"partition-id": 3, "num-partitions": 3}, "partition-id=3 num-partitions=3 does not fit"),
    ({"partition-id": 0, "num-partitions": 4}, "use num-partitions=3"),
])
def test_a_node_config_that_does_not_fit_the_run_is_refused(node_config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _partition(_context({}, node_config), num_clients=3)
    assert _partition(_context({}, {"partition-id": 2, "num-partitions": 3}), num_clients=3) == 2


def test_a_taken_superlink_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DeploymentError, match=f"port 127.0.0.1:{port} is taken"):
            check_port_free(port)
        with pytest.raises(DeploymentError, match="is taken"), Federation(1, tmp_path, superlink_port=port):
            pass


# -- real processes ------------------------------------------------------------------------------

N_NODES = 3


def _config():  # type: ignore[no-untyped-def]
    smoke = FLTask.tier("quick").smoke
    return FLTask.resolve("quick", {**smoke, "method": "secagg_sq", "num_clients": N_NODES,
                                    "clients_per_round": N_NODES, "rounds": 1, "bits": 2, "range": 0.05,
                                    "num_shares": 1.0, "threshold": 0.6})


def _local_updates(config, initial: np.ndarray, fit_config: dict) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    """Each partition's round-1 update, retrained in this process as its ClientApp trains it."""
    import torch

    from tasks.fl.apps import ClientSpec, _Trainer, build_model, get_weights
    from tasks.fl.data import load
    from tasks.fl.rounds import flatten, unflatten

    partitions, _ = load(config.dataset, config.num_clients, config.alpha, config.split_seed, config.data_dir)
    spec = ClientSpec(config.dataset, tuple(config.hidden), partitions, config.local_epochs, config.batch_size,
                      config.lr, config.seed, "cpu")
    like = get_weights(build_model(config.dataset, tuple(config.hidden)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in every ClientApp process
    try:
        fits = [_Trainer(spec, p).fit(unflatten(initial, like), dict(fit_config))[0] for p in range(config.num_clients)]
    finally:
        torch.set_num_threads(threads)
    return [flatten(w) - initial for w in fits]


def _descendants(federation: Federation) -> list:  # type: ignore[type-arg]
    import psutil

    procs = []
    for popen in federation._procs.values():
        root = psutil.Process(popen.pid)
        procs += [root, *root.children(recursive=True)]
    return procs


def _gone(proc) -> bool:  # type: ignore[no-untyped-def]
    import psutil

    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow  # about 3.5 min on a loaded 2-core machine: one ClientApp process per message
@pytest.mark.timeout(1200)
def test_a_secagg_sq_round_through_a_superlink_and_supernodes(tmp_path: Path) -> None:
    import torch

    from tasks.fl.apps import build_model, get_weights
    from tasks.fl.config import method_of
    from tasks.fl.rounds import flatten

    config = _config()
    with Federation(N_NODES, tmp_path) as federation:
        result = run_deployed(federation, config, timeout=600)
        node_ids = dict(federation.node_ids)
        started = _descendants(federation)
        # a round SecAgg+ cannot finish (clients drop after the key exchange) fails the run with the reason
        with pytest.raises(DeploymentError, match="the ServerApp failed: SecAggAbort: secure aggregation aborted"):
            run_deployed(federation, config.model_copy(update={"dropout": 0.99}), timeout=600)
        # a SuperNode that dies is reported with its log
        federation._procs["supernode-1"].kill()
        with pytest.raises(DeploymentError, match=r"supernode-1 exited with status -9; the tail of .*supernode-1\.log"):
            run_deployed(federation, config, timeout=300)
    assert started and all(_gone(p) for p in started), "processes left running after the federation closed"

    assert result["error"] is None
    assert set(result["accuracy"]) == {"0", "1"} and 0 <= result["accuracy"]["1"] <= 1
    arrays = result["arrays"]
    torch.manual_seed(config.seed)
    weights = get_weights(build_model(config.dataset, tuple(config.hidden)))
    initial = flatten(weights)
    np.testing.assert_array_equal(arrays["initial"], initial)  # the Simulation Engine's initial model
    assert set(arrays["last_survivors"].tolist()) == set(node_ids.values())

    # the unmasked sum is the plaintext sum of the three clients' encodings, bit for bit
    plan = method_of(config).round_plan(config, weights)
    codec = plan.codec(1)
    updates = _local_updates(config, initial, {"round": 1, **plan.fit_config(1)})
    # each client seeds its stochastic rounding with (seed, round, partition) and appends its weight (1)
    expected = sum(np.append(codec.encode(updates[p], np.random.default_rng([config.seed, 1, p])), 1) for p in node_ids)
    np.testing.assert_array_equal(arrays["last_sum"], expected)
    # ... and the new global model is the initial one plus its decoded mean
    np.testing.assert_allclose(arrays["final"], initial + codec.decode(expected[:-1], N_NODES, initial.size), atol=1e-6)
    assert np.abs(arrays["final"] - initial).max() > 0

    # uplink bytes were counted on the replies that crossed the SuperLink, per node
    assert sorted((b["round"], b["node"]) for b in result["bytes"]) == sorted((1, n) for n in node_ids.values())
    packed = -(-(initial.size + 1) * plan.field_bits // 8)
    for b in result["bytes"]:
        assert packed <= b["payload"] < packed + 1024 and b["overhead"] > 0
    metrics = deployed_metrics(result)
    assert result["fp32_reply_bytes"] > 4 * initial.size  # the fp32 FedAvg reply the compression is measured against
    assert metrics["bandwidth/compression"] > 1
    assert metrics["utility/accuracy"] == result["accuracy"]["1"]
    assert metrics["compute/model_bytes"] == 4 * initial.size and metrics["bandwidth/dropped_bytes"] == 0
    assert result["samples"] == {"1": list(range(N_NODES))}  # sampled by partition
