"""The Flower apps: a ClientApp (local SGD + the method's mods) and a ServerApp (legacy FedAvg
under ``DefaultWorkflow``, with Flower's SecAgg+ or its compressed extension as fit workflow).

Everything federated is Flower's: the Simulation Engine runs the apps, ``FedAvg`` samples
clients and keeps the model, the workflows and mods run the secure-aggregation protocol.
This module only says what to train and how each method plugs into that machinery.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.client import Client, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp
from torch import nn

from tasks.fl.meter import MeteredGrid
from tasks.fl.rounds import RoundPlan
from tasks.fl.secure import CompressedSecAggPlusWorkflow, compressed_secaggplus_mod


class ClientDropout(RuntimeError):
    """A simulated client failure after the key exchange."""


def build_model(dataset: str, hidden: tuple[int, ...]) -> nn.Module:
    if dataset == "digits":
        layers: list[nn.Module] = []
        width = 64
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        return nn.Sequential(*layers, nn.Linear(width, 10))
    if dataset == "femnist":  # the LEAF FEMNIST CNN
        return nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(64 * 7 * 7, 2048), nn.ReLU(), nn.Linear(2048, 62))
    if dataset == "shakespeare":  # the LEAF Shakespeare next-character LSTM
        return _CharLSTM()
    raise ValueError(f"unknown dataset {dataset!r}")


class _CharLSTM(nn.Module):
    def __init__(self, vocab: int = 80, embed: int = 8, hidden: int = 256) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(x))
        return self.head(out[:, -1])


def get_weights(model: nn.Module) -> list[np.ndarray]:
    return [p.detach().cpu().numpy().copy() for p in model.state_dict().values()]


def set_weights(model: nn.Module, weights: list[np.ndarray]) -> None:
    model.load_state_dict({k: torch.from_numpy(np.asarray(w)) for k, w in zip(model.state_dict(), weights, strict=True)})


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, device: str) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(x[i:i + 1024]).to(device)) for i in range(0, len(x), 1024)])
        target = torch.from_numpy(y).to(device)
        loss = nn.functional.cross_entropy(logits, target).item()
        acc = (logits.argmax(1) == target).float().mean().item()
    return loss, acc


@dataclass(frozen=True)
class ClientSpec:
    """What every client needs, picklable for the Simulation Engine's workers."""

    dataset: str
    hidden: tuple[int, ...]
    partitions: list[tuple[np.ndarray, np.ndarray]]
    local_epochs: int
    batch_size: int
    lr: float
    seed: int
    device: str
    weighted: bool = True  # False: every client weighs 1 in FedAvg (dp: a client's sensitivity is clip / clients)


class _Trainer(NumPyClient):
    def __init__(self, spec: ClientSpec, partition: int) -> None:
        self.spec, self.partition = spec, partition

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        spec = self.spec
        x, y = spec.partitions[self.partition]
        torch.manual_seed(spec.seed * 100_003 + int(config.get("round", 0)) * 1009 + self.partition)
        model = build_model(spec.dataset, spec.hidden).to(spec.device)
        set_weights(model, parameters)
        opt = torch.optim.SGD(model.parameters(), lr=spec.lr)
        xs, ys = torch.from_numpy(x).to(spec.device), torch.from_numpy(y).to(spec.device)
        model.train()
        for _ in range(spec.local_epochs):
            order = torch.randperm(len(xs))
            for i in range(0, len(xs), spec.batch_size):
                idx = order[i:i + spec.batch_size]
                opt.zero_grad()
                nn.functional.cross_entropy(model(xs[idx]), ys[idx]).backward()
                opt.step()
        return get_weights(model), len(x) if spec.weighted else 1, {}


def dropout_mod(rate: float, seed: int) -> Callable[[Message, Context, Callable], Message]:
    """A mod that fails a client's training with probability ``rate``, drawn per (seed, round, node).

    Placed inside the SecAgg+ mod, it runs after the key exchange (the masked-vector stage is
    the only one that reaches the client's fit), which is when SecAgg+ must cope with dropouts.
    """

    def mod(msg: Message, ctxt: Context, call_next: Callable) -> Message:
        if rate > 0:
            coin = np.random.default_rng([seed, int(msg.metadata.group_id or 0), msg.metadata.dst_node_id % 2**63, 7])
            if coin.random() < rate:
                raise ClientDropout(f"node {msg.metadata.dst_node_id} dropped out in round {msg.metadata.group_id}")
        return call_next(msg, ctxt)

    return mod


def client_app(spec: ClientSpec, method: str, dropout: float) -> ClientApp:
    def client_fn(context: Context) -> Client:
        torch.set_num_threads(1)
        return _Trainer(spec, int(context.node_config["partition-id"])).to_client()

    secure = {"fedavg": [], "dp": [], "secagg": [secaggplus_mod]}.get(method, [compressed_secaggplus_mod])
    return ClientApp(client_fn=client_fn, mods=[*secure, dropout_mod(dropout, spec.seed)])


@dataclass
class ServerRecord:
    """What the ServerApp leaves behind for the run: per-round accuracy, the byte meter, any error."""

    accuracy: dict[int, float] = field(default_factory=dict)
    evaluated_at: dict[int, float] = field(default_factory=dict)  # perf_counter() after each round
    loss: dict[int, float] = field(default_factory=dict)
    meter: MeteredGrid | None = None
    error: BaseException | None = None
    workflow: Any = None


def server_app(*, method: str, rounds: int, num_clients: int, clients_per_round: int, initial: list[np.ndarray],
               evaluate_fn: Callable, plan: RoundPlan | None, num_shares: int | float, threshold: int | float,
               record: ServerRecord, on_round: Callable[[int], None] = lambda r: None,
               dp: tuple[float, float] | None = None) -> ServerApp:
    """A ServerApp: Flower's FedAvg under ``DefaultWorkflow``, the method's fit workflow inside."""
    from flwr.common import ndarrays_to_parameters

    def fit_config(rnd: int) -> dict[str, Any]:
        on_round(rnd)
        return {"round": rnd, **(plan.fit_config(rnd) if plan is not None else {})}

    def central_eval(rnd: int, weights: list[np.ndarray], _: dict) -> tuple[float, dict[str, float]]:
        loss, acc = evaluate_fn(weights)
        record.accuracy[rnd], record.loss[rnd] = acc, loss
        record.evaluated_at[rnd] = time.perf_counter()
        return loss, {"accuracy": acc}

    strategy = FedAvg(fraction_fit=clients_per_round / num_clients, min_fit_clients=clients_per_round,
                      min_available_clients=num_clients, fraction_evaluate=0.0, min_evaluate_clients=0,
                      initial_parameters=ndarrays_to_parameters(initial), evaluate_fn=central_eval,
                      on_fit_config_fn=fit_config)
    if dp is not None:  # central DP: Flower clips each update and noises the mean (noise multiplier, clip)
        strategy = DifferentialPrivacyServerSideFixedClipping(strategy, noise_multiplier=dp[0], clipping_norm=dp[1],
                                                              num_sampled_clients=clients_per_round)
    # Flower reads a float as a fraction (<= 1) and an int as a count: a whole-number count from a
    # config file (3.0) must reach it as an int.
    num_shares, threshold = (int(v) if v > 1 and float(v).is_integer() else v for v in (num_shares, threshold))
    if method in ("fedavg", "dp"):
        fit_workflow = None
    elif method == "secagg":
        fit_workflow = SecAggPlusWorkflow(num_shares=num_shares, reconstruction_threshold=threshold)
    else:
        fit_workflow = CompressedSecAggPlusWorkflow(plan, num_shares=num_shares, reconstruction_threshold=threshold)
    record.workflow = fit_workflow
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        record.meter = MeteredGrid(grid)
        try:
            DefaultWorkflow(fit_workflow=fit_workflow)(record.meter, legacy)
        except BaseException as exc:  # kept for the run's error; the Simulation Engine only logs it
            record.error = exc
            raise

    return app
