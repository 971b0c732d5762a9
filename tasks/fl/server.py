"""The Flower ServerApp: seeded FedAvg under ``DefaultWorkflow``, the method's fit workflow inside.

The method (:class:`tasks.fl.config.FLMethod`) gives the fit workflow (``fedavg``: Flower's
default fit round; ``secagg``: Flower's SecAgg+ workflow; the compressed methods: its extension,
:mod:`tasks.fl.secure`), the strategy around the seeded FedAvg (``dp``: Flower's central-DP
clipping and noise) and how clients are sampled (:mod:`tasks.fl.strategy`). Before the first
round the server asks every node for its partition, so that its sampling and everything the
clients draw follow the run's seed, not Flower's random node ids.
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

from tasks.fl.config import FLConfig, method_of
from tasks.fl.engine import prompt_grid
from tasks.fl.meter import MeteredGrid
from tasks.fl.rounds import RoundPlan
from tasks.fl.strategy import SeededFedAvg, query_partitions


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


@dataclass(frozen=True)
class ServerSpec:
    """What a ServerApp runs: the config (its method gives the workflow, strategy and sampling),
    the initial weights, the central evaluation, and what the method derived for the run."""

    config: FLConfig
    initial: list[np.ndarray]
    evaluate_fn: Callable[[list[np.ndarray]], tuple[float, float]]  # weights -> (loss, accuracy)
    plan: RoundPlan | None = None  # the compressed methods' codec plan
    noise_multiplier: float | None = None  # the dp method's noise
    on_round: Callable[[int], None] = lambda rnd: None  # called as each round is configured


def server_app(spec: ServerSpec, record: ServerRecord) -> ServerApp:
    """A ServerApp running ``spec``; what it evaluates, meters and fails with goes into ``record``."""
    config, method, plan = spec.config, method_of(spec.config), spec.plan

    def fit_config(rnd: int) -> dict[str, Any]:
        spec.on_round(rnd)
        return {"round": rnd, **(plan.fit_config(rnd) if plan is not None else {})}

    def central_eval(rnd: int, weights: list[np.ndarray], _: dict) -> tuple[float, dict[str, float]]:
        loss, acc = spec.evaluate_fn(weights)
        record.accuracy[rnd], record.loss[rnd] = acc, loss
        record.evaluated_at[rnd] = time.perf_counter()
        return loss, {"accuracy": acc}

    strategy = SeededFedAvg(seed=config.seed, num_clients=config.num_clients, clients_per_round=config.clients_per_round,
                            sampler=method.client_sampler(config),
                            fraction_fit=config.clients_per_round / config.num_clients,
                            min_fit_clients=config.clients_per_round, min_available_clients=config.num_clients,
                            fraction_evaluate=0.0, min_evaluate_clients=0,
                            initial_parameters=ndarrays_to_parameters(spec.initial), evaluate_fn=central_eval,
                            on_fit_config_fn=fit_config)
    top = method.wrap_strategy(config, strategy, noise_multiplier=spec.noise_multiplier)
    record.workflow, record.strategy = method.fit_workflow(config, plan, strategy), strategy
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=config.rounds), strategy=top)
        prompt_grid(grid)
        record.meter = MeteredGrid(grid)
        try:
            strategy.partition_of = query_partitions(grid, config.num_clients)  # on the raw grid: not uplink
            DefaultWorkflow(fit_workflow=record.workflow)(record.meter, legacy)
        except BaseException as exc:  # kept for the run's error; the Simulation Engine only logs it
            record.error = exc
            raise

    return app
