"""Flower's Simulation Engine without its 100 ms polls, and with the clients' data sent once.

In flwr 1.42 messages move between the ServerApp and the simulated nodes by polling, twice per exchange:

- the ServerApp's grid (``InMemoryGrid.send_and_receive``) looks for replies every ``pull_interval``
  (0.1 s by default);
- the engine's ``add_messages_to_queue`` thread looks for new instructions every 0.1 s (a literal).

A round of FedAvg is one exchange and a SecAgg+ round four, each a few milliseconds of client work on the
quick tier's MLP, so these waits were a third of an fl cell's wall time: a secagg cell took 52.8 s with
both polls at 0.1 s, 44.9 s with the grid's at 5 ms and 35.0 s with both (one run each, same machine,
same accuracy to the last digit). Neither interval can be set through ``run_simulation``, which builds the
grid and the engine's threads itself, hence the two small interventions below. They change when a
message is picked up, never what it carries: a run's updates, bytes and accuracy are the same.

A poll is not free: the engine's thread scans every pending message once per node (20 nodes on the quick
tier). Its CPU over a secagg cell, measured on a loaded machine: 0.44 s at 0.1 s, 1.27 s at 20 ms, 2.7 s at
10 ms, 4.5 s at 5 ms; hence :data:`ENGINE_POLL_S` = 20 ms (about 3% of a core). The grid's poll only looks
up the replies it waits for, so :data:`GRID_POLL_S` is shorter.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

ENGINE_POLL_S = 0.02
GRID_POLL_S = 0.005


def prompt_grid(grid: Any, interval: float | None = None) -> None:
    """Make the Simulation Engine's grid look for replies every ``interval`` s (default
    :data:`GRID_POLL_S`); other grids are left as they are."""
    from flwr.superlink.grid import InMemoryGrid

    if isinstance(grid, InMemoryGrid):
        grid.pull_interval = GRID_POLL_S if interval is None else interval


class _PromptStop:
    """The engine's stop event, with every wait on it cut to at most ``interval`` seconds."""

    def __init__(self, event: threading.Event, interval: float) -> None:
        self._event, self._interval = event, interval

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(self._interval if timeout is None else min(timeout, self._interval))


@contextmanager
def prompt_engine(interval: float | None = None) -> Iterator[None]:
    """Within the block, the Simulation Engine's thread that hands instructions to the nodes polls
    every ``interval`` s (default :data:`ENGINE_POLL_S`) instead of every 0.1 s. The engine runs in
    the calling process (one run per process), and Flower's function is back when the block exits."""
    from flwr.server.superlink.fleet.vce import vce_api

    original = vce_api.add_messages_to_queue
    interval = ENGINE_POLL_S if interval is None else interval

    def add_messages_promptly(state: Any, queue: Any, nodes_mapping: Any, f_stop: threading.Event) -> None:
        original(state, queue, nodes_mapping, _PromptStop(f_stop, interval))

    vce_api.add_messages_to_queue = add_messages_promptly
    try:
        yield
    finally:
        vce_api.add_messages_to_queue = original


# -- the clients' data, once per worker -------------------------------------------------------


class SharedPartitions(Sequence):
    """The clients' partitions in Ray's object store, fetched once per worker process.

    The Simulation Engine pickles the ClientApp, and with it the :class:`tasks.fl.apps.ClientSpec`,
    into every message it hands an actor (1,220 in a quick secagg run). With the arrays inside, every
    message carried the whole training set (359 KB for digits), more than Ray passes inline, so each
    cost an object-store put in the driver and a read in the actor while the actor waited. Here the
    arrays are put once; a message carries their reference, and an actor reads them on its first
    message (:func:`_fetched`). They are the same arrays, so a run's updates do not change.
    """

    def __init__(self, partitions: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        import ray

        self._ref = ray.put(list(partitions))
        self._len = len(partitions)

    def __getitem__(self, i: Any) -> Any:
        return _fetched(self._ref)[i]

    def __len__(self) -> int:
        return self._len


@functools.lru_cache(maxsize=2)
def _fetched(ref: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """The partitions behind ``ref``, as writable copies (the object store's arrays are read-only)."""
    import ray

    return [(np.array(x), np.array(y)) for x, y in ray.get(ref)]


@contextmanager
def ray_session(init_args: dict[str, Any]) -> Iterator[None]:
    """Ray, started (or joined) before the Simulation Engine so that the run can put objects into it.

    ``run_simulation`` starts Ray itself only when it is not running, with the driver's import path
    passed to its workers; this does the same with ``init_args`` (what the engine's ``init_args`` would
    be). Ray is shut down when the block exits, also when the run fails before the engine started.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    path = os.pathsep.join([*sys.path, *filter(None, [os.environ.get("PYTHONPATH")])])
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": path}}, **{"include_dashboard": False, **init_args})
    try:
        yield
    finally:
        ray.shutdown()
