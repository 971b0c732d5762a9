"""Flower's real ServerApp and ClientApps joined by an in-process Grid, for the fl tests.

:class:`LoopbackGrid` hands every message straight to the node's ClientApp, through Flower's
wire format (so every node gets its own copy), and records the replies; :func:`federate` runs
a config's ServerApp (:func:`tasks.fl.server.server_app`) over it. Many rounds, dropout cases
and reruns run in seconds without starting Ray; the conformance and sweep tests run the same
apps on the Simulation Engine.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest


def loopback_grid(apps: dict, contexts: dict) -> Any:
    """A Flower ``Grid`` over ``apps`` (node id -> ClientApp) with their ``contexts``."""
    from flwr.serverapp.grid import Grid

    class LoopbackGrid(Grid):
        def __init__(self) -> None:
            from flwr.supercore.run import Run

            self.apps, self.contexts, self._run = apps, contexts, Run.create_empty(1)
            self.replies: list = []  # every reply, in order (tests read the masked vectors from it)

        def set_run(self, run):  # type: ignore[no-untyped-def]
            self._run = run

        @property
        def run(self):  # type: ignore[no-untyped-def]
            return self._run

        def create_message(self, *a, **k):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def get_node_ids(self):  # type: ignore[no-untyped-def]
            return list(self.apps)

        def get_nodes(self):  # type: ignore[no-untyped-def]
            return []

        def push_messages(self, messages):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def pull_messages(self, message_ids):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
            from flwr.app import Error, Message
            from flwr.common.serde import message_from_proto, message_to_proto

            replies = []
            for msg in messages:
                nid = msg.metadata.dst_node_id
                try:
                    replies.append(self.apps[nid](message_from_proto(message_to_proto(msg)), self.contexts[nid]))
                except Exception as exc:  # a client that fails sends an error reply, as on the Engine
                    replies.append(Message(Error(code=0, reason=str(exc)), reply_to=msg))
            self.replies += replies
            return replies

    return LoopbackGrid()


def node_context(nid: int, partition: int) -> Any:
    from flwr.app import Context, RecordDict

    return Context(run_id=1, node_id=nid, node_config={"partition-id": partition, "num-partitions": 0},
                   state=RecordDict(), run_config={})


def random_node_ids(n: int, seed: int | None = None) -> list[int]:
    """Node ids as Flower draws them: random positive int64s (``seed`` None: fresh each call)."""
    return [int(v) for v in np.random.default_rng(seed).integers(1, 2**63 - 1, size=n)]


def federate(config: Any, client_apps: dict[int, Any], *, initial: list[np.ndarray], plan: Any = None,  # type: ignore[no-untyped-def]
             evaluate_fn: Any = None, noise_multiplier: float | None = None, node_ids: list[int] | None = None):
    """Run ``config``'s ServerApp over a loopback grid; ``client_apps``: partition -> ClientApp.

    Returns ``(record, grid, evaluated)``: the ServerRecord, the grid (its ``replies``) and the
    weights of every central evaluation.
    """
    from flwr.app import Context, RecordDict

    from tasks.fl.server import ServerRecord, ServerSpec, server_app

    node_ids = node_ids or random_node_ids(len(client_apps))
    partition_of = dict(zip(node_ids, sorted(client_apps), strict=True))
    grid = loopback_grid({nid: client_apps[p] for nid, p in partition_of.items()},
                         {nid: node_context(nid, p) for nid, p in partition_of.items()})
    evaluated: list[list[np.ndarray]] = []

    def evaluate(weights):  # type: ignore[no-untyped-def]
        evaluated.append([np.asarray(w).copy() for w in weights])
        return evaluate_fn(weights) if evaluate_fn is not None else (0.0, 0.0)

    record = ServerRecord()
    app = server_app(ServerSpec(config, initial, evaluate, plan=plan, noise_multiplier=noise_multiplier), record)
    app(grid=grid, context=Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))
    return record, grid, evaluated


@pytest.fixture
def server_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The identity Flower's runtimes give a ServerApp process (messages are stamped with it)."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, attr, value)


def fixed_clients(updates: dict[int, np.ndarray], weights: dict[int, int], dropped: set[int], mods: list) -> dict:
    """partition -> a ClientApp whose fit adds a fixed update and reports a fixed weight."""
    from flwr.client import NumPyClient
    from flwr.clientapp import ClientApp

    class Fixed(NumPyClient):
        def __init__(self, partition: int) -> None:
            self.partition = partition

        def get_properties(self, config):  # type: ignore[no-untyped-def]
            return {"partition-id": self.partition}

        def fit(self, parameters, config):  # type: ignore[no-untyped-def]
            if self.partition in dropped:
                raise RuntimeError(f"partition {self.partition} dropped out")
            return [parameters[0] + updates[self.partition]], weights[self.partition], {}

    def app(partition: int) -> ClientApp:
        return ClientApp(client_fn=lambda context: Fixed(partition).to_client(), mods=list(mods))

    return {p: app(p) for p in updates}
