"""Uplink bytes, counted on Flower's own wire format of every reply a client sends.

:class:`MeteredGrid` wraps the ServerApp's ``Grid``: every reply message that comes back is
serialized with Flower's ``message_to_proto`` (what the Deployment Engine sends over gRPC) and
its ``ByteSize`` is added to the sending client's count for that round, as payload (the fit
result or the masked vector) or as SecAgg+ overhead (public keys, encrypted key shares,
unmasking shares). An error reply (a client that failed) adds nothing.

A client *completed* a round when its payload arrived (its update was aggregated); the keys and
shares a client sent before it dropped out are counted apart (:func:`uplink_summary`), so that
dropouts never lower the bytes per client that a method is credited with.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

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

    def round_entries(self, rnd: int) -> list[dict[str, int]]:
        """The byte counts of the clients that sent anything in round ``rnd``."""
        return [kinds for (r, _), kinds in self.bytes.items() if r == rnd]

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


def uplink_summary(entries: Iterable[Mapping[str, int]], rounds: int) -> dict[str, float]:
    """The run's bandwidth metrics from its per-(round, client) byte counts.

    ``uplink_bytes`` and ``secagg_overhead_bytes``: means over the (round, client) pairs whose
    payload arrived; ``dropped_bytes``: what clients that dropped out sent, per round.
    """
    entries = list(entries)
    completed = [e for e in entries if e["payload"] > 0]
    if not completed:
        raise RuntimeError("no client completed a round: no uplink to report")
    dropped = sum(e["payload"] + e["overhead"] for e in entries if e["payload"] == 0)
    return {"bandwidth/uplink_bytes": sum(e["payload"] + e["overhead"] for e in completed) / len(completed),
            "bandwidth/secagg_overhead_bytes": sum(e["overhead"] for e in completed) / len(completed),
            "bandwidth/dropped_bytes": dropped / rounds}
