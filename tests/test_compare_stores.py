"""benchmarks.compare: a result that moves beyond its seed noise is flagged, one within it is not."""

from __future__ import annotations

from benchmarks.compare import compare_family
from suite.tracking import RunRecord


def _run(method: str, seed: int, **metrics: float) -> RunRecord:
    return RunRecord(run_id=f"{method}{seed}", experiment_id="1", status="FINISHED", start_time=0, end_time=1,
                     artifact_uri="", tags={"suite.tier": "quick"},
                     params={"method": method, "seed": str(seed), "version": "1"},
                     metrics={**metrics, "compute/wall_s": 10.0 * seed + 1})


def _store(accuracy_shift: float = 0.0, bytes_shift: float = 0.0) -> list[RunRecord]:
    noise = [0.01, -0.01, 0.0]
    return [_run(method, seed, **{"utility/accuracy": base + noise[seed] + accuracy_shift,
                                  "bandwidth/uplink_bytes": 1000.0 + bytes_shift})
            for method, base in (("a", 0.8), ("b", 0.6)) for seed in range(3)]


def test_identical_results_and_a_move_within_the_seed_noise_are_not_flagged() -> None:
    made, beyond = compare_family("f", _store(), _store(accuracy_shift=0.005))
    assert made == 4 and beyond == []


def test_a_move_beyond_the_noise_and_any_change_of_a_metric_seeds_do_not_vary_are_flagged() -> None:
    _, beyond = compare_family("f", _store(), _store(accuracy_shift=0.05, bytes_shift=1.0))
    flagged = {(d.config.split("=")[1], d.metric) for d in beyond}
    assert flagged == {("a", "utility/accuracy"), ("b", "utility/accuracy"),
                       ("a", "bandwidth/uplink_bytes"), ("b", "bandwidth/uplink_bytes")}
    assert all(d.z == float("inf") for d in beyond if d.metric == "bandwidth/uplink_bytes")


def test_the_seed_and_the_task_version_do_not_split_a_config() -> None:
    before = _store()
    after = [RunRecord(**{**r.__dict__, "params": {**r.params, "version": "2"}}) for r in before]
    made, beyond = compare_family("f", before, after)
    assert made == 4 and beyond == []
