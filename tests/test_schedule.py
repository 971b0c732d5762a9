"""A sweep's order (longest first, from the store's durations, else the tier's estimates) and the
Ray heads a local sweep lends its federated cells."""

from __future__ import annotations

import subprocess
import time
import sys
import textwrap
from pathlib import Path

import pytest

from runners.cell import Cell
from runners.rayhead import RayHeads
from runners.schedule import DEFAULT_S, expected_durations, longest_first
from runners.sweep import run_sweep
from suite.config import load_tier
from suite.errors import ConfigError
from suite.task import get_task


def _cells(**grid) -> list[Cell]:
    """One toy cell per value of the one key in ``grid``."""
    task = get_task("toy")
    [(key, values)] = grid.items()
    return [Cell.make(task, "quick", task.resolve("quick", {key: v})) for v in values]


def test_cells_a_store_has_run_are_ordered_by_their_durations(store) -> None:
    cells = _cells(sleep_s=[0.0, 0.6, 0.3])
    run_sweep(cells, tracker=store, jobs=1)
    assert [c.config["sleep_s"] for c in longest_first(cells, store)] == [0.6, 0.3, 0.0]
    # Other seeds of the same settings have never run: they take the durations of their closest runs.
    task = get_task("toy")
    others = [Cell.make(task, "quick", task.resolve("quick", {"sleep_s": s, "seed": 7})) for s in (0.0, 0.3, 0.6)]
    expected = expected_durations(others, store)
    assert [c.config["sleep_s"] for c in longest_first(others, store)] == [0.6, 0.3, 0.0]
    assert expected[others[2].hash] > expected[others[1].hash] + 0.2 > expected[others[0].hash] + 0.4


def test_cells_never_run_take_the_tier_files_estimates(store) -> None:
    hang, slow, plain = (_cells(method=["hang"]) + _cells(sleep_s=[0.5]) + _cells(sleep_s=[0.2]))
    expected = expected_durations([plain, slow, hang], store)
    assert (expected[hang.hash], expected[slow.hash], expected[plain.hash]) == (60, 5, DEFAULT_S)
    assert longest_first([plain, slow, hang], store) == [hang, plain, slow]


@pytest.mark.parametrize("estimates", ["[{seconds: 0}]", "[{method: ok}]", "{seconds: 3}", "[{seconds: true}]"])
def test_a_bad_estimate_is_refused_with_the_rule(tmp_path: Path, estimates: str) -> None:
    (tmp_path / "quick.yaml").write_text(f"defaults: {{}}\nestimates: {estimates}\n")
    with pytest.raises(ConfigError, match="estimates"):
        load_tier(tmp_path, "quick")


_JOIN = textwrap.dedent("""
    import sys, ray
    ray.init(address=sys.argv[1], log_to_driver=False)
    print(ray.cluster_resources()["CPU"], ray.get(ray.remote(lambda: 6 * 7).remote()))
""")


def test_a_ray_head_is_lent_to_cells_and_closed_with_its_slot() -> None:
    heads = RayHeads()
    try:
        address = heads.address(0, 1)
        assert heads.address(0, 1) == address  # one head per slot, reused
        joined = subprocess.run([sys.executable, "-c", _JOIN, address], capture_output=True, text=True, timeout=120)
        assert joined.returncode == 0, joined.stderr[-2000:]
        assert joined.stdout.split()[-2:] == ["1.0", "42"]  # the head's CPUs, and a task ran on it
        holder = heads.holders[(0, 1)]
        heads.discard(0)
        assert holder.poll() == 0 and not heads.holders  # the holder shut Ray down and exited
    finally:
        heads.close()


def test_a_sweeps_ray_heads_close_once_no_cell_needs_them_not_after_the_last_cell(store, monkeypatch) -> None:
    from tests.toy.task import ToyTask

    # Toy cells that sleep under 1 s "run on Ray" (they are lent a head, which they ignore); the 8 s one does not.
    monkeypatch.setattr(ToyTask, "ray_cpus", lambda self, config: 1 if config.sleep_s < 1 else None, raising=False)
    closed: list[float] = []
    close = RayHeads.close

    def timed_close(self: RayHeads) -> None:
        if self.holders:
            closed.append(time.time())
        close(self)

    monkeypatch.setattr(RayHeads, "close", timed_close)
    outcomes = run_sweep(_cells(sleep_s=[8.0, 0.1, 0.2]), tracker=store, jobs=2)
    assert [o.status for o in outcomes] == ["FINISHED"] * 3
    # The short cells wait for their head to start (seconds), then end; the 8 s cell runs on.
    [long] = [o for o in outcomes if o.cell.config["sleep_s"] == 8.0]
    assert len(closed) == 1 and closed[0] < store.run(long.run_id).end_time / 1000  # closed while it still ran


def test_a_cell_waiting_for_its_ray_head_holds_up_neither_the_sweep_nor_its_address(store, monkeypatch) -> None:
    from tests.toy.task import ToyTask

    monkeypatch.setattr(ToyTask, "ray_cpus", lambda self, config: 1 if config.method == "ray_address" else None,
                        raising=False)
    task = get_task("toy")
    on_ray = Cell.make(task, "quick", task.resolve("quick", {"method": "ray_address", "sleep_s": 0.5}))
    plain = Cell.make(task, "quick", task.resolve("quick", {"sleep_s": 0.1}))
    outcomes = {o.cell.hash: o for o in run_sweep([on_ray, plain], tracker=store, jobs=2)}
    assert outcomes[on_ray.hash].metrics["utility/accuracy"] == 1.0  # it ran with its head's address
    ray_run, plain_run = (store.run(outcomes[c.hash].run_id) for c in (on_ray, plain))
    # The Ray cell starts first (its estimate is longer) and waits seconds for its head; the other cell
    # does not wait behind it: it is over before the Ray cell's own computation began.
    assert ray_run.start_time <= plain_run.start_time
    assert plain_run.end_time < ray_run.end_time - 1000 * ray_run.metrics["compute/wall_s"]
