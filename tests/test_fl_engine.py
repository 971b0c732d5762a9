"""The Simulation Engine's polls (tasks.fl.engine): shorter where the suite runs one, Flower's own elsewhere."""

from __future__ import annotations

import threading

from tasks.fl.engine import ENGINE_POLL_S, GRID_POLL_S, prompt_engine, prompt_grid


class _StopAfterOneWait(threading.Event):
    """A stop event that records how long each wait was asked to be, and is set by the first one."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        self.set()
        return True


def _engine_waits() -> list[float | None]:
    """The waits of one turn of Flower's own loop that hands instructions to the nodes (no nodes here)."""
    from flwr.server.superlink.fleet.vce import vce_api

    stop = _StopAfterOneWait()
    vce_api.add_messages_to_queue(None, None, {}, stop)
    return stop.waits


def test_the_engine_polls_every_engine_poll_s_within_the_block_and_as_flower_does_after() -> None:
    from flwr.server.superlink.fleet.vce import vce_api

    original = vce_api.add_messages_to_queue
    assert _engine_waits() == [0.1]  # Flower's literal: if this changes, revisit tasks.fl.engine
    with prompt_engine():
        assert _engine_waits() == [ENGINE_POLL_S]
    assert vce_api.add_messages_to_queue is original and _engine_waits() == [0.1]


def test_the_engine_is_restored_when_the_run_fails() -> None:
    from flwr.server.superlink.fleet.vce import vce_api

    original = vce_api.add_messages_to_queue
    try:
        with prompt_engine(0.001):
            raise RuntimeError("the simulation failed")
    except RuntimeError:
        pass
    assert vce_api.add_messages_to_queue is original


def test_prompt_grid_shortens_the_in_memory_grids_poll_and_leaves_other_grids_alone() -> None:
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.superlink.federation import NoOpFederationManager
    from flwr.superlink.grid import InMemoryGrid

    grid = InMemoryGrid(LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()))
    assert grid.pull_interval == 0.1
    prompt_grid(grid)
    assert grid.pull_interval == GRID_POLL_S

    class OtherGrid:
        pull_interval = 3.0

    other = OtherGrid()
    prompt_grid(other)
    assert other.pull_interval == 3.0


def test_the_client_apps_own_parts_pickle_by_reference() -> None:
    """The engine pickles the ClientApp into every message; the suite's client function and mods are
    instances of importable classes (the standard pickle, which cannot copy a closure, takes them)."""
    import pickle

    import numpy as np

    from tasks.fl.apps import ClientSpec, DropoutMod, SeededNumpyMod, _ClientFn, client_app

    spec = ClientSpec("digits", (8,), [(np.zeros((2, 64), np.float32), np.zeros(2, np.int64))], 1, 2, 0.1, 0, "cpu")
    app = client_app(spec, [SeededNumpyMod(3)], dropout=0.25)
    mods = pickle.loads(pickle.dumps(app._mods))
    assert mods == [SeededNumpyMod(3), DropoutMod(0.25, 0)]
    assert pickle.loads(pickle.dumps(_ClientFn(spec))).spec.hidden == (8,)


def test_shared_partitions_travel_by_reference_and_reach_a_worker_whole_and_writable() -> None:
    import numpy as np
    import ray
    from ray import cloudpickle

    from tasks.fl.apps import ClientSpec
    from tasks.fl.data import load
    from tasks.fl.engine import SharedPartitions, ray_session

    parts, _ = load("digits", 20, 0.5, 0, None)

    def spec(partitions) -> ClientSpec:  # type: ignore[no-untyped-def]
        return ClientSpec("digits", (8,), partitions, 1, 16, 0.1, 0, "cpu")

    @ray.remote(num_cpus=1)
    def read(spec: ClientSpec) -> list:
        return [(x.flags.writeable, x.tobytes() == ref_x.tobytes(), np.array_equal(y, ref_y))
                for (x, y), (ref_x, ref_y) in zip(spec.partitions, parts, strict=True)]

    with ray_session({"address": "local", "num_cpus": 1, "logging_level": "ERROR", "log_to_driver": False}):
        shared = spec(SharedPartitions(parts))
        assert len(shared.partitions) == 20
        inline = len(cloudpickle.dumps(spec(parts)))
        assert len(cloudpickle.dumps(shared)) < 2_000 < 300_000 < inline  # a reference, not the 359 KB of arrays
        assert ray.get(read.remote(shared)) == [(True, True, True)] * 20
    assert not ray.is_initialized()  # the session ends with the block
