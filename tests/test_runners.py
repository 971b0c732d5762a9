"""The local and sweep runners against a real SQLite MLflow store, with the toy task's planned faults."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from runners.local import run_one
from runners.sweep import plan, run_sweep
from suite.task import get_task
from tests.conftest import statuses, suite_cli, suite_popen

CONTRACT_TAGS = ("suite.task", "suite.task_version", "suite.method", "suite.tier", "suite.seed", "suite.config_hash", "suite.git_commit",
                 "suite.version", "privacy.unit", "privacy.accountant")


def _toy(**overrides):
    task = get_task("toy")
    return task, task.resolve("quick", overrides)


def test_finished_run_carries_the_contract(store) -> None:
    task, config = _toy(seed=2, value=0.4)
    outcome = run_one(task, "quick", config, tracker=store)
    assert outcome.status == "FINISHED"
    run = store.run(outcome.run_id)
    assert run.status == "FINISHED"
    assert all(tag in run.tags for tag in CONTRACT_TAGS)
    assert run.tags["suite.method"] == "ok" and run.tags["suite.seed"] == "2"
    assert run.metrics["utility/accuracy"] == pytest.approx(0.42)
    assert {"compute/wall_s", "compute/cpu_s", "compute/peak_rss_mb", "compute/train_s"} <= set(run.metrics)
    assert run.params["value"] == "0.4"
    files = {f.path for f in store.client.list_artifacts(outcome.run_id)}
    assert {"config.json", "environment.json", "result.json"} <= files
    result = store.read_json(outcome.run_id, "result.json")
    assert result["metrics"]["utility/accuracy"]["direction"] == "higher"
    assert result["config_hash"] == run.tags["suite.config_hash"]
    # the full declared schema, logged or not (the board needs no task code to render the run)
    assert result["schema"]["privacy/epsilon"] == {"direction": "lower", "unit": "epsilon",
                                                   "description": "noisy: epsilon of the Laplace noise added",
                                                   "per_privacy_unit": True}
    assert "privacy/epsilon" not in result["metrics"] and result["privacy_unit"] == "none"
    env = store.read_json(outcome.run_id, "environment.json")
    assert env["packages"] and env["cpu_count"] >= 1


def test_step_history_is_logged_and_the_headline_value_is_the_latest(store) -> None:
    task, config = _toy(sleep_s=0.2, value=0.8)
    outcome = run_one(task, "quick", config, tracker=store)
    history = store.client.get_metric_history(outcome.run_id, "utility/accuracy")
    by_step = {m.step: m.value for m in history}
    assert by_step[1] == pytest.approx(0.2) and by_step[3] == pytest.approx(0.6)
    assert store.run(outcome.run_id).metrics["utility/accuracy"] == pytest.approx(0.8)


def test_a_finished_config_is_reused_unless_forced(store) -> None:
    task, config = _toy()
    first = run_one(task, "quick", config, tracker=store)
    again = run_one(task, "quick", config, tracker=store)
    forced = run_one(task, "quick", config, tracker=store, force=True)
    assert (first.status, again.status, forced.status) == ("FINISHED", "CACHED", "FINISHED")
    assert again.run_id == first.run_id and forced.run_id != first.run_id


@pytest.mark.parametrize(("method", "reason"), [("crash", "planned crash"), ("nan", "not finite")])
def test_crash_or_nan_ends_failed_with_the_reason(store, method: str, reason: str) -> None:
    task, config = _toy(method=method)
    outcome = run_one(task, "quick", config, tracker=store)
    run = store.run(outcome.run_id)
    assert outcome.status == run.status == "FAILED"
    assert reason in run.tags["suite.failure_reason"]
    assert "utility/accuracy" not in run.metrics


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_ends_a_run_killed(tmp_path: Path, signum: int) -> None:
    proc = suite_popen("run", "toy", "--set", "method=hang", cwd=tmp_path)
    from suite.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    deadline = time.monotonic() + 60
    while not tracker.runs("toy", status="RUNNING"):
        assert time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.2)
    time.sleep(1.0)  # let it get from opening the run into the task
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    [run] = tracker.runs("toy")
    assert run.status == "KILLED"
    assert run.tags["suite.failure_reason"] == f"interrupted by {signal.Signals(signum).name}"


def test_parallel_sweep_loses_no_metric_and_second_sweep_is_cached(store) -> None:
    cells = plan([get_task("toy")], "quick", {"sleep_s": 0.2})
    assert len(cells) == 6
    outcomes = run_sweep(cells, tracker=store, jobs=2)
    assert sorted(o.status for o in outcomes) == ["FINISHED"] * 6
    runs = store.runs("toy")
    assert len(runs) == 6
    for run in runs:
        assert run.status == "FINISHED"
        expected = float(run.params["value"]) + int(run.params["seed"]) / 100
        assert run.metrics["utility/accuracy"] == pytest.approx(expected)
        assert run.metrics["compute/steps"] == 4
    again = run_sweep(cells, tracker=store, jobs=2)
    assert [o.status for o in again] == ["CACHED"] * 6
    assert len(store.runs("toy")) == 6


def test_a_hung_cell_is_killed_and_recorded_and_the_sweep_goes_on(store) -> None:
    task = get_task("toy")
    cells = plan([task], "quick", {"method": "hang"}, timeout_s=2)[:1] + plan([task], "quick")[:2]
    outcomes = {o.cell.hash: o for o in run_sweep(cells, tracker=store, jobs=2)}
    hung = outcomes[cells[0].hash]
    assert hung.status == "FAILED" and "timeout" in hung.reason
    assert [outcomes[c.hash].status for c in cells[1:]] == ["FINISHED", "FINISHED"]
    run = store.run(hung.run_id)
    assert run.status == "FAILED" and "timeout" in run.tags["suite.failure_reason"]


def test_failed_cells_are_retried_by_the_next_sweep(store) -> None:
    task = get_task("toy")
    cells = plan([task], "quick", {"method": "crash"})[:2]
    assert {o.status for o in run_sweep(cells, tracker=store)} == {"FAILED"}
    assert {o.status for o in run_sweep(cells, tracker=store)} == {"FAILED"}
    assert all(s == ["FAILED", "FAILED"] for s in statuses(store, "toy").values())


def test_sweep_cli_exit_status(tmp_path: Path) -> None:
    ok = suite_cli("sweep", "toy", "--jobs", "2", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "6 finished" in ok.stdout
    cached = suite_cli("sweep", "toy", cwd=tmp_path)
    assert cached.returncode == 0 and "6 cached" in cached.stdout
    failed = suite_cli("sweep", "toy", "--set", "method=crash", cwd=tmp_path)
    assert failed.returncode == 1 and "6 failed" in failed.stdout


@pytest.mark.parametrize("args", [
    ("run", "toy", "--set", "valu=1"),
    ("run", "toy", "--set", "method=explode"),
    ("run", "toy", "--set", "sleep_s=-1"),
    ("run", "toyy"),
    ("sweep", "toy", "--tier", "full"),
    ("sweep", "toy", "--jobs", "0"),
    ("show", "dpsgd", "--set", "epsilon=0"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = suite_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error:" in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_killed_sweep_resumes_to_exactly_one_finished_run_per_cell(tmp_path: Path) -> None:
    from suite.tracking import Tracker

    args = ("sweep", "toy", "--jobs", "2", "--set", "sleep_s=1.0")
    proc = suite_popen(*args, cwd=tmp_path)
    tracker = None
    deadline = time.monotonic() + 120
    while True:  # kill it once at least one cell finished and others are running
        assert time.monotonic() < deadline, "sweep made no progress"
        if tracker is None and (tmp_path / "mlflow.db").exists():
            tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
        if tracker and tracker.runs("toy", status="FINISHED") and tracker.runs("toy", status="RUNNING"):
            break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert tracker.runs("toy", status="RUNNING"), "the killed sweep should leave RUNNING runs behind"
    finished_before = {r.run_id for r in tracker.runs("toy", status="FINISHED")}

    resumed = suite_cli(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    by_hash = statuses(tracker, "toy")
    assert len(by_hash) == 6
    assert all(s.count("FINISHED") == 1 and "RUNNING" not in s for s in by_hash.values()), by_hash
    assert finished_before <= {r.run_id for r in tracker.runs("toy", status="FINISHED")}
    killed = tracker.runs("toy", status="KILLED")
    assert killed and all("stale" in r.tags["suite.failure_reason"] for r in killed)


def test_two_sweeps_writing_one_store_at_once_lose_nothing(tmp_path: Path) -> None:
    a = suite_popen("sweep", "toy", "--jobs", "2", "--set", "value=0.1", cwd=tmp_path)
    b = suite_popen("sweep", "toy", "--jobs", "2", "--set", "value=0.9", cwd=tmp_path)
    for proc in (a, b):
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out
    from suite.tracking import Tracker

    runs = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}").runs("toy")
    assert len(runs) == 6 and all(r.status == "FINISHED" for r in runs)
    assert all("utility/accuracy" in r.metrics for r in runs)


def test_suite_run_shares_the_sweeps_lifecycle_busy_check_and_reaping(store) -> None:
    from runners.cell import Cell
    from runners.outcome import open_run

    task, config = _toy(seed=4)
    live = open_run(store, Cell.make(task, "quick", config))  # RUNNING, owned by this (live) process
    busy = run_one(task, "quick", config, tracker=store)
    assert busy.status == "BUSY" and store.run(live).status == "RUNNING"
    store.client.set_tag(live, "suite.pid_start", "0.0")  # as if its process had died
    done = run_one(task, "quick", config, tracker=store)
    assert done.status == "FINISHED"
    assert store.run(live).status == "KILLED" and "stale" in store.run(live).tags["suite.failure_reason"]


def test_tracker_reads_give_the_suites_own_records(store) -> None:
    from suite.tracking import RunRecord

    task, config = _toy(value=0.3)
    outcome = run_one(task, "quick", config, tracker=store)
    [record] = store.runs("toy")
    assert isinstance(record, RunRecord) and record == store.run(outcome.run_id)
    assert record.status == "FINISHED" and record.params["value"] == "0.3" and record.end_time >= record.start_time
    frame = store.frame()
    assert list(frame.columns[:6]) == ["run_id", "experiment_id", "status", "artifact_uri", "start_time", "end_time"]
    assert frame.loc[0, "params.value"] == "0.3" and frame.loc[0, "metrics.utility/accuracy"] == pytest.approx(0.3)
    assert str(frame["start_time"].dt.tz) == "UTC"
    assert store.read_json(outcome.run_id, "config.json")["config"] == config.model_dump(mode="json")
    assert store.read_json(outcome.run_id, "missing.json") is None
