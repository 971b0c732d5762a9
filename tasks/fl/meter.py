"""Uplink bytes, counted on Flower's own wire format of every reply a client sends.

:class:`MeteredGrid` wraps the ServerApp's ``Grid``: every reply message that comes back is
serialized with Flower's ``message_to_proto`` (what the Deployment Engine sends over gRPC) and
its ``ByteSize`` is added to the sending client's count for that round, as payload (the fit
result or the masked vector) or as SecAgg+ overhead (public keys, encrypted key shares,
unmasking shares). A client that drops out sends nothing and adds nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from flwr.app import Message
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.common.serde import message_to_proto
from flwr.serverapp.grid import Grid


def reply_kind(msg: Message) -> str:
    """``payload`` for a fit result or masked vector, ``overhead`` for the other SecAgg+ stages."""
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is None or Key.MASKED_PARAMETERS in configs:
        return "payload"
    return "overhead"


class MeteredGrid(Grid):
    """A ``Grid`` that counts the serialized bytes of every reply, per round, client and kind."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid
        # (round, node id) -> {"payload": bytes, "overhead": bytes}
        self.bytes: dict[tuple[int, int], dict[str, int]] = defaultdict(lambda: {"payload": 0, "overhead": 0})

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for msg in replies:
            if msg.has_error():
                continue
            key = (int(msg.metadata.group_id or 0), msg.metadata.src_node_id)
            self.bytes[key][reply_kind(msg)] += message_to_proto(msg).ByteSize()
        return replies

    def per_client_round(self, kind: str | None = None) -> list[int]:
        """Bytes each client sent in each round it took part in (``kind`` None: both kinds)."""
        return [sum(v.values()) if kind is None else v[kind] for v in self.bytes.values()]

    # -- the rest of the Grid interface, delegated -------------------------------------------
    def set_run(self, run):  # type: ignore[no-untyped-def]
        return self._grid.set_run(run)

    @property
    def run(self):  # type: ignore[no-untyped-def]
        return self._grid.run

    def create_message(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self):  # type: ignore[no-untyped-def]
        return self._grid.get_node_ids()

    def get_nodes(self):  # type: ignore[no-untyped-def]
        return self._grid.get_nodes()

    def push_messages(self, messages):  # type: ignore[no-untyped-def]
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids):  # type: ignore[no-untyped-def]
        return self._grid.pull_messages(message_ids)
