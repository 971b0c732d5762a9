"""The model and the Flower ClientApp: local SGD plus the method's mods.

Everything federated is Flower's: the Simulation Engine runs the apps, the mods run the
secure-aggregation protocol. This module only says what a client trains and what weight it
reports; each method names its mods (:mod:`tasks.fl.methods`), the ServerApp is in
:mod:`tasks.fl.server`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.client import Client, NumPyClient
from flwr.clientapp import ClientApp
from torch import nn

from tasks.fl.strategy import PARTITION_KEY, partition_id


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
    partitions: Sequence[tuple[np.ndarray, np.ndarray]]  # (x, y) per client; the engine's are shared (tasks.fl.engine)
    local_epochs: int
    batch_size: int
    lr: float
    seed: int
    device: str
    weight_cap: int = 1  # a client reports min(examples, weight_cap) as its weight: 1 is uniform weighting


class _Trainer(NumPyClient):
    def __init__(self, spec: ClientSpec, partition: int) -> None:
        self.spec, self.partition = spec, partition

    def get_properties(self, config: dict[str, Any]) -> dict[str, Any]:
        return {PARTITION_KEY: self.partition}  # the server samples by partition (tasks.fl.strategy)

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
        # The fit result's num_examples is the weight FedAvg and SecAgg+ aggregate with.
        return get_weights(model), min(len(x), spec.weight_cap), {}


Mod = Callable[[Message, Context, Callable], Message]


def _round(msg: Message) -> int:
    return int(msg.metadata.group_id or 0)


# The mods and the client function are instances of module-level classes, not closures: the Simulation
# Engine pickles the ClientApp into every message it sends an actor (1,220 messages in a quick secagg run),
# and cloudpickle copies a closure by value, scanning the loaded modules each time (1.7 ms per message
# with closures, measured), where an instance of an importable class is pickled by reference.


@dataclass(frozen=True)
class DropoutMod:
    """A mod that fails a client's training with probability ``rate``, drawn per (seed, round, partition).

    Placed inside the SecAgg+ mod, it runs after the key exchange (the masked-vector stage is
    the only one that reaches the client's fit), which is when SecAgg+ must cope with dropouts.
    """

    rate: float
    seed: int

    def __call__(self, msg: Message, ctxt: Context, call_next: Callable) -> Message:
        if self.rate > 0 and msg.metadata.message_type == MessageType.TRAIN:
            coin = np.random.default_rng([self.seed, _round(msg), partition_id(ctxt), 7])
            if coin.random() < self.rate:
                raise ClientDropout(f"partition {partition_id(ctxt)} dropped out in round {_round(msg)}")
        return call_next(msg, ctxt)


@dataclass(frozen=True)
class SeededNumpyMod:
    """Seed numpy's global generator per (seed, round, partition) before each training message.

    Flower's SecAgg+ mod rounds the weights stochastically with ``np.random.rand``; seeding it
    makes ``secagg`` repeatable. Its secrets do not come from that generator (``os.urandom``
    for the mask seed, the ``cryptography`` package for keys, PyCryptodome for Shamir shares).
    """

    seed: int

    def __call__(self, msg: Message, ctxt: Context, call_next: Callable) -> Message:
        if msg.metadata.message_type == MessageType.TRAIN:
            np.random.seed(np.random.SeedSequence([self.seed, _round(msg), partition_id(ctxt), 17]).generate_state(4))
        return call_next(msg, ctxt)


@dataclass(frozen=True)
class _ClientFn:
    """The ClientApp's client function: a one-thread :class:`_Trainer` of the context's partition."""

    spec: ClientSpec

    def __call__(self, context: Context) -> Client:
        torch.set_num_threads(1)
        return _Trainer(self.spec, partition_id(context)).to_client()


def client_app(spec: ClientSpec, mods: list[Mod], dropout: float) -> ClientApp:
    """The ClientApp: local SGD inside the method's ``mods`` (:meth:`tasks.fl.config.FLMethod.client_mods`),
    with the dropout mod innermost."""
    return ClientApp(client_fn=_ClientFn(spec), mods=[*mods, DropoutMod(dropout, spec.seed)])
