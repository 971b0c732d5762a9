"""Server-side sampling and aggregation that one config and seed repeat exactly.

Flower gives every node a random id (the Simulation Engine and SuperNodes alike) and its
``FedAvg`` samples clients with an unseeded ``random.sample``; its central-DP wrapper draws
noise from numpy's global generator. Here the server first asks every node for its
partition id (:func:`query_partitions`), then samples *partitions* with a generator seeded by
the run's seed and the round (:class:`SeededFedAvg`), so that two runs of one config, and two
methods run with one seed, train the same clients in every round; the dp method's noise is
seeded the same way (:class:`SeededDpClipping`).

The dp method samples by Poisson (each client independently with probability
``q = clients_per_round / num_clients``), which is what its accountants analyse, and divides
the sum of the clipped updates by the fixed ``q * num_clients`` (DP-FedAvg, McMahan et al.
2018), so that one client moves the mean by at most ``clip_norm / (q * num_clients)``: the
sensitivity Flower's ``DifferentialPrivacyServerSideFixedClipping`` scales its noise to when
given ``num_sampled_clients = q * num_clients``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import numpy as np
from flwr.app import Message
from flwr.common import FitIns, GetPropertiesIns, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import MessageTypeLegacy
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_manager import ClientManager
from flwr.server.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.default_workflows import default_fit_workflow
from flwr.serverapp.grid import Grid

PARTITION_KEY = "partition-id"  # Flower's node-config key (Simulation Engine and `--node-config`)


def partition_id(ctxt: Any) -> int:
    """A node's partition (its node config's ``partition-id``), which seeds everything a client draws."""
    if PARTITION_KEY not in ctxt.node_config:
        raise ValueError(f"the node has no {PARTITION_KEY!r} in its node config")
    return int(ctxt.node_config[PARTITION_KEY])


def query_partitions(grid: Grid, num_clients: int, *, timeout: float = 600.0) -> dict[int, int]:
    """Node id -> partition id of every node, asked once (a ``get_properties`` message each).

    Waits for ``num_clients`` nodes to connect. Not counted as uplink: it exists only so that
    the server can seed its sampling by partition, which a real deployment would not need.
    """
    deadline = time.monotonic() + timeout
    while len(node_ids := sorted(grid.get_node_ids())) < num_clients:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(node_ids)} of {num_clients} nodes connected within {timeout:.0f} s")
        time.sleep(0.5)
    content = compat.getpropertiesins_to_recorddict(GetPropertiesIns({}))
    msgs = [Message(content=content, dst_node_id=nid, message_type=MessageTypeLegacy.GET_PROPERTIES, group_id="0")
            for nid in node_ids]
    partitions: dict[int, int] = {}
    for reply in grid.send_and_receive(msgs, timeout=timeout):
        if reply.has_error():
            raise RuntimeError(f"node {reply.metadata.src_node_id} did not say its partition: {reply.error}")
        properties = compat.recorddict_to_getpropertiesres(reply.content).properties
        partitions[reply.metadata.src_node_id] = int(properties[PARTITION_KEY])
    if sorted(partitions.values()) != list(range(num_clients)):
        raise RuntimeError(f"the nodes hold partitions {sorted(partitions.values())}; expected each of "
                           f"0..{num_clients - 1} exactly once")
    return partitions


def sample_partitions(*, seed: int, rnd: int, num_clients: int, clients_per_round: int, sampler: str) -> list[int]:
    """The partitions round ``rnd`` trains: ``clients_per_round`` without replacement
    (``fixed_size``), or each with probability ``clients_per_round / num_clients`` (``poisson``)."""
    rng = np.random.default_rng([seed, rnd, 5])
    if sampler == "fixed_size":
        return sorted(int(p) for p in rng.choice(num_clients, size=clients_per_round, replace=False))
    if sampler == "poisson":
        return [int(p) for p in np.flatnonzero(rng.random(num_clients) < clients_per_round / num_clients)]
    raise ValueError(f"unknown sampler {sampler!r}; allowed: fixed_size, poisson")


class SeededFedAvg(FedAvg):
    """Flower's FedAvg, sampling partitions from the run's seed; results aggregated in partition order.

    ``sampler="poisson"`` also replaces the weighted mean by DP-FedAvg's fixed-denominator mean
    (the sum of the updates over ``clients_per_round``, an empty round included).
    """

    def __init__(self, *, seed: int, num_clients: int, clients_per_round: int, sampler: str = "fixed_size",
                 **fedavg: Any) -> None:
        super().__init__(**fedavg)
        self.seed, self.num_clients, self.clients_per_round, self.sampler = seed, num_clients, clients_per_round, sampler
        self.partition_of: dict[int, int] = {}  # node id -> partition, set once the nodes have said it
        self.samples: dict[int, list[int]] = {}  # round -> the partitions sampled
        self._current: list[np.ndarray] = []

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[Any, FitIns]]:
        if len(self.partition_of) != self.num_clients:
            raise RuntimeError("the server samples by partition: query_partitions must run before the first round")
        if client_manager.num_available() < self.num_clients:  # num_available refreshes Flower's node list
            client_manager.wait_for(self.num_clients)
        proxy_of = {self.partition_of[p.node_id]: p for p in client_manager.all().values() if p.node_id in self.partition_of}
        chosen = sample_partitions(seed=self.seed, rnd=server_round, num_clients=self.num_clients,
                                   clients_per_round=self.clients_per_round, sampler=self.sampler)
        self.samples[server_round] = chosen
        self._current = parameters_to_ndarrays(parameters)
        config = self.on_fit_config_fn(server_round) if self.on_fit_config_fn is not None else {}
        fit_ins = FitIns(parameters, config)
        return [(proxy_of[p], fit_ins) for p in chosen]

    def aggregate_fit(self, server_round: int, results: list, failures: list) -> tuple[Parameters | None, dict]:
        # Reply order follows the clients' timing; a fixed order makes the float sums repeatable.
        results = sorted(results, key=lambda r: self.partition_of.get(r[0].node_id, -1))
        if self.sampler != "poisson":
            return super().aggregate_fit(server_round, results, failures)
        if failures:
            return None, {}
        total = [np.zeros_like(a, dtype=np.float64) for a in self._current]
        for _, res in results:
            for acc, new, old in zip(total, parameters_to_ndarrays(res.parameters), self._current, strict=True):
                acc += new - old
        mean = [(old + acc / self.clients_per_round).astype(old.dtype) for old, acc in zip(self._current, total, strict=True)]
        return ndarrays_to_parameters(mean), {}


class SeededDpClipping(DifferentialPrivacyServerSideFixedClipping):
    """Flower's central-DP wrapper with its Gaussian noise drawn from the run's seed and the round.

    Flower draws the noise with ``np.random.normal``; the global generator is seeded around the
    call and restored after it. A seed that is logged makes the noise reproducible, which a
    benchmark needs and a deployment must not have: there the noise comes from a secret source.
    """

    def __init__(self, strategy: SeededFedAvg, *, seed: int, noise_multiplier: float, clipping_norm: float) -> None:
        # num_sampled_clients: the fixed denominator q * N of the Poisson mean, not the round's count.
        super().__init__(strategy, noise_multiplier=noise_multiplier, clipping_norm=clipping_norm,
                         num_sampled_clients=strategy.clients_per_round)
        self.seed = seed

    def aggregate_fit(self, server_round: int, results: list, failures: list) -> tuple[Parameters | None, dict]:
        with _global_numpy_seed([self.seed, server_round, 13]):
            return super().aggregate_fit(server_round, results, failures)


@contextmanager
def _global_numpy_seed(entropy: list[int]):  # type: ignore[no-untyped-def]
    saved = np.random.get_state()
    np.random.seed(np.random.SeedSequence(entropy).generate_state(4))
    try:
        yield
    finally:
        np.random.set_state(saved)


def dp_fit_workflow(sampler: SeededFedAvg) -> Callable[[Grid, Any], None]:
    """Flower's default fit round, plus the noise of a round whose Poisson sample is empty.

    Flower skips a round in which the strategy sampled nobody; the mechanism the accountant
    analyses still releases the noise then (the sum over nobody is zero), so that a round with
    no participant looks like any other.
    """

    def workflow(grid: Grid, context: Any) -> None:
        default_fit_workflow(grid, context)
        rnd = int(context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND])
        if sampler.samples.get(rnd):
            return
        aggregated, _ = context.strategy.aggregate_fit(rnd, [], [])
        context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(aggregated, True)

    return workflow
