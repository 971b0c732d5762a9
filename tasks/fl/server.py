"""The Flower ServerApp: seeded FedAvg under ``DefaultWorkflow``, the method's fit workflow inside.

``fedavg`` runs Flower's default fit round; ``secagg`` Flower's SecAgg+ workflow; the
compressed methods its extension (:mod:`tasks.fl.secure`); ``dp`` wraps the strategy in
Flower's central-DP clipping and noise, with Poisson sampling (:mod:`tasks.fl.strategy`).
Before the first round the server asks every node for its partition, so that its sampling
and everything the clients draw follow the run's seed, not Flower's random node ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.workflow import DefaultWorkflow
from flwr.serverapp import Grid, ServerApp

from tasks.fl.meter import MeteredGrid
from tasks.fl.rounds import RoundPlan
from tasks.fl.rules import flower_value
from tasks.fl.secure import AbortingSecAggPlusWorkflow, CompressedSecAggPlusWorkflow
from tasks.fl.strategy import SeededDpClipping, SeededFedAvg, dp_fit_workflow, query_partitions


@dataclass
class ServerRecord:
    """What the ServerApp leaves behind for the run: per-round accuracy, the byte meter, any error."""

    accuracy: dict[int, float] = field(default_factory=dict)
    evaluated_at: dict[int, float] = field(default_factory=dict)  # perf_counter() after each round
    loss: dict[int, float] = field(default_factory=dict)
    meter: MeteredGrid | None = None
    error: BaseException | None = None
    workflow: Any = None
    strategy: SeededFedAvg | None = None  # its ``samples``: the partitions each round trained


def server_app(config: Any, *, initial: list[np.ndarray], evaluate_fn: Callable, plan: RoundPlan | None,
               record: ServerRecord, on_round: Callable[[int], None] = lambda r: None,
               noise_multiplier: float | None = None) -> ServerApp:
    """A ServerApp running ``config`` (an :class:`~tasks.fl.config.FLConfig`) from ``initial`` weights.

    ``plan``: the compressed methods' codec plan; ``noise_multiplier``: the dp method's noise.
    """

    def fit_config(rnd: int) -> dict[str, Any]:
        on_round(rnd)
        return {"round": rnd, **(plan.fit_config(rnd) if plan is not None else {})}

    def central_eval(rnd: int, weights: list[np.ndarray], _: dict) -> tuple[float, dict[str, float]]:
        loss, acc = evaluate_fn(weights)
        record.accuracy[rnd], record.loss[rnd] = acc, loss
        record.evaluated_at[rnd] = time.perf_counter()
        return loss, {"accuracy": acc}

    strategy = SeededFedAvg(seed=config.seed, num_clients=config.num_clients, clients_per_round=config.clients_per_round,
                            sampler="poisson" if config.method == "dp" else "fixed_size",
                            fraction_fit=config.clients_per_round / config.num_clients,
                            min_fit_clients=config.clients_per_round, min_available_clients=config.num_clients,
                            fraction_evaluate=0.0, min_evaluate_clients=0,
                            initial_parameters=ndarrays_to_parameters(initial), evaluate_fn=central_eval,
                            on_fit_config_fn=fit_config)
    top = strategy
    if config.method == "dp":  # central DP: Flower clips each update and noises the mean
        top = SeededDpClipping(strategy, seed=config.seed, noise_multiplier=noise_multiplier,
                               clipping_norm=config.clip_norm)
    record.workflow, record.strategy = _fit_workflow(config, plan, strategy), strategy
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=config.rounds), strategy=top)
        record.meter = MeteredGrid(grid)
        try:
            strategy.partition_of = query_partitions(grid, config.num_clients)  # on the raw grid: not uplink
            DefaultWorkflow(fit_workflow=record.workflow)(record.meter, legacy)
        except BaseException as exc:  # kept for the run's error; the Simulation Engine only logs it
            record.error = exc
            raise

    return app


def _fit_workflow(config: Any, plan: RoundPlan | None, strategy: SeededFedAvg) -> Any:
    if config.method == "fedavg":
        return None  # Flower's default fit round
    if config.method == "dp":
        return dp_fit_workflow(strategy)
    shares, threshold = flower_value(config.num_shares), flower_value(config.threshold)
    if config.method == "secagg":  # Flower's SecAgg+ weighs each client by its fit result's num_examples
        return AbortingSecAggPlusWorkflow(num_shares=shares, reconstruction_threshold=threshold,
                                          max_weight=float(config.client_weight_cap()))
    return CompressedSecAggPlusWorkflow(plan, num_shares=shares, reconstruction_threshold=threshold)
