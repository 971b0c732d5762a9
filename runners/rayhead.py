"""Ray heads a sweep starts once and lends to its cells, one per worker slot.

Flower's Simulation Engine runs on Ray. Started by each cell, a Ray runtime (GCS, raylet, object
store) costs seconds of every federated cell; joined, it costs well under one. So the local
sweep keeps one head per worker slot (and per CPU count a cell asks for) and passes its address
to the cell in ``RAY_ADDRESS``; the task's ``ray.init`` joins it (``tasks/fl`` does this).

Isolation stays per cell: a slot runs one cell at a time, so the head's CPUs are that cell's
alone, and the actors a cell starts belong to its driver, which Ray kills when the cell's
process ends. A head whose cell failed or was killed is closed, and the slot's next cell gets a
fresh one, so nothing a broken cell left behind can reach the next.

Each head lives in a holder process: ``python -m runners.rayhead CPUS`` starts Ray, prints the
GCS address, and shuts Ray down when its standard input closes. The sweep holds the other end
of that pipe, so a sweep that dies, even by SIGKILL, takes its heads with it.
"""

from __future__ import annotations

import select
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

_READY = "RAY_HEAD_ADDRESS="


@dataclass
class RayHeads:
    """The heads of one sweep, by (worker slot, CPUs): started by :meth:`prepare` (or on first use)
    in the background, waited for by :meth:`address`."""

    holders: dict[tuple[int, int], subprocess.Popen[str]] = field(default_factory=dict)
    addresses: dict[tuple[int, int], str] = field(default_factory=dict)

    def prepare(self, slot: int, cpus: int) -> None:
        """Start the head of ``slot`` with ``cpus`` CPUs, unless it runs already; do not wait for it."""
        if (slot, cpus) not in self.holders:
            self.holders[(slot, cpus)] = subprocess.Popen(
                [sys.executable, "-m", "runners.rayhead", str(cpus)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def address(self, slot: int, cpus: int) -> str:
        """The GCS address of the head of ``slot`` with ``cpus`` CPUs, once it is up."""
        key = (slot, cpus)
        if key not in self.addresses:
            self.prepare(slot, cpus)
            self.addresses[key] = _wait_ready(self.holders[key], cpus)
        return self.addresses[key]

    def ready(self, slot: int, cpus: int) -> bool:
        """Whether :meth:`address` of a prepared head would answer now, without waiting: the head
        is up, or its holder has exited (then :meth:`address` raises the reason)."""
        key = (slot, cpus)
        if key in self.addresses:
            return True
        holder = self.holders.get(key)
        return holder is None or holder.stdout is None or bool(select.select([holder.stdout], [], [], 0)[0])

    def waiting(self, slot: int, cpus: int) -> Any:
        """What to wait on (:func:`multiprocessing.connection.wait`) for the head to be ready."""
        return self.holders[(slot, cpus)].stdout

    def discard(self, slot: int) -> None:
        """Close the heads of ``slot`` (its cell failed or was killed): the next cell gets fresh ones."""
        self._stop([k for k in self.holders if k[0] == slot])

    def close(self) -> None:
        """Close every head, all at once (each takes a second or two to shut Ray down)."""
        self._stop(list(self.holders))

    def _stop(self, keys: list[tuple[int, int]]) -> None:
        holders = [self.holders.pop(key) for key in keys]
        for key in keys:
            self.addresses.pop(key, None)
        for holder in holders:
            ask_to_stop(holder)
        for holder in holders:
            stop_head(holder)


def _wait_ready(holder: subprocess.Popen[str], cpus: int) -> str:
    """The address a holder prints once its Ray head is up; an error if it exits instead."""
    assert holder.stdout is not None
    line = holder.stdout.readline()
    if not line.startswith(_READY):
        stop_head(holder)
        error = holder.stderr.read().strip().splitlines() if holder.stderr else []
        raise RuntimeError(f"could not start a Ray head of {cpus} CPUs for the sweep's federated cells: "
                           f"{error[-1] if error else 'the holder exited without an address'}")
    return line[len(_READY):].strip()


def ask_to_stop(holder: subprocess.Popen[str]) -> None:
    """Close the holder's standard input: it shuts Ray down and exits."""
    if holder.stdin and not holder.stdin.closed:
        try:
            holder.stdin.close()
        except OSError:  # it exited already
            pass


def stop_head(holder: subprocess.Popen[str]) -> None:
    """Close the holder's standard input (it shuts Ray down and exits); kill it if it does not."""
    try:
        ask_to_stop(holder)
        holder.wait(timeout=30)
    except subprocess.TimeoutExpired:
        holder.kill()
        holder.wait()


def _hold(cpus: int) -> None:
    import logging

    import ray

    ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    print(_READY + ray.get_runtime_context().gcs_address, flush=True)
    try:
        sys.stdin.read()  # returns at EOF: the sweep closed the pipe, or died
    finally:
        ray.shutdown()


if __name__ == "__main__":
    _hold(int(sys.argv[1]))
