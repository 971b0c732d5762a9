"""Faults and bad input: kills at random moments, unusable stores, corrupt caches.

Each case must end in a clear error naming the problem and the fix, and lose nothing that was
already recorded.
"""

from __future__ import annotations

import os
import random
import signal
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from suite.cache import atomic_write, cached_arrays
from suite.errors import TrackingError
from suite.tracking import Tracker
from tests.conftest import statuses, suite_cli, suite_popen

FAULT_ARGS = ("sweep", "toyfault", "--jobs", "2")
FAULT_CELLS = 24


def _finished_ids(db: Path) -> set[str]:
    if not db.exists():
        return set()
    try:
        return {r.run_id for r in Tracker(f"sqlite:///{db}").runs("toyfault", status="FINISHED")}
    except TrackingError:
        return set()  # killed before the store's first open completed


def _running_of(db: Path, pid: int) -> bool:
    """Has the sweep with process id ``pid`` opened a run (its cells are in flight)?"""
    if not db.exists():
        return False
    try:
        runs = Tracker(f"sqlite:///{db}").runs("toyfault", status="RUNNING")
    except TrackingError:
        return False
    return any(r.tags.get("suite.pid") == str(pid) for r in runs)


def _kill_at_random_moments(tmp_path: Path, trials: int, seed: int, *extra: str) -> dict[str, int]:
    """Start the sweep and SIGKILL it, ``trials`` times, then let it finish.

    One kill in five lands at a random moment of start-up (opening the store, planning, reaping);
    the others at a random moment up to 2 s after the sweep opened its first run, while cells
    run, finish and are recorded.
    """
    rng = random.Random(seed)
    db = tmp_path / "mlflow.db"
    seen: set[str] = set()
    exited = mid_sweep = 0
    for _ in range(trials):
        proc = suite_popen(*FAULT_ARGS, *extra, cwd=tmp_path)
        in_startup = rng.random() < 0.2
        deadline = time.monotonic() + (rng.uniform(0.0, 4.0) if in_startup else 120)
        while proc.poll() is None and time.monotonic() < deadline:
            if not in_startup and _running_of(db, proc.pid):
                time.sleep(rng.uniform(0.0, 2.0))
                mid_sweep += 1
                break
            time.sleep(0.1)
        if proc.poll() is not None:
            exited += 1  # finished (or failed) before the kill
        else:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        seen |= _finished_ids(db)
    resumed = suite_cli(*FAULT_ARGS, *extra, cwd=tmp_path, timeout=240)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    tracker = Tracker(f"sqlite:///{db}")
    by_hash = statuses(tracker, "toyfault")
    assert len(by_hash) == FAULT_CELLS
    assert all(s.count("FINISHED") == 1 and "RUNNING" not in s for s in by_hash.values()), by_hash
    final = {r.run_id for r in tracker.runs("toyfault", status="FINISHED")}
    assert seen <= final, "a FINISHED run was lost"
    for run in tracker.runs("toyfault", status="FINISHED"):  # and nothing half-logged passes for finished
        expected = float(run.params["value"]) + int(run.params["seed"]) / 100
        assert run.metrics["utility/accuracy"] == pytest.approx(expected)
    return {"trials": trials, "killed_mid_sweep": mid_sweep, "exited_before_kill": exited,
            "finished_before_resume": len(seen), "runs_reaped_killed": len(tracker.runs("toyfault", status="KILLED"))}


def test_sweep_survives_sigkill_at_random_moments(tmp_path: Path) -> None:
    summary = _kill_at_random_moments(tmp_path, trials=4, seed=1)
    assert summary["killed_mid_sweep"] >= 2 and summary["runs_reaped_killed"] >= 2, summary


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 25 interpreter start-ups: minutes on a busy machine
def test_sweep_survives_twenty_five_sigkills(tmp_path: Path) -> None:
    # 1 s cells: a kill up to 2 s into the sweep lets a cell or two finish, so the 24 cells last
    # about as many trials and most kills land mid-sweep (with 0.2 s cells the sweep was done by trial ~15).
    summary = _kill_at_random_moments(tmp_path, 25, 2, "--set", "sleep_s=1.0")
    print("fault injection:", summary)
    assert summary["killed_mid_sweep"] >= 15 and summary["runs_reaped_killed"] >= 15, summary


# --------------------------------------------------------------------------- unusable stores


def _cli_at(uri: str, *args: str, cwd: Path, timeout: float = 120):  # noqa: ANN202 - CompletedProcess
    """The command line with ``MLFLOW_TRACKING_URI`` set to ``uri``."""
    import subprocess
    import sys

    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_missing_store_folder_is_named_with_the_fix(tmp_path: Path) -> None:
    result = _cli_at(f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}", "run", "toy", cwd=tmp_path)
    assert result.returncode == 2
    assert "nowhere does not exist; create it" in result.stderr
    assert not (tmp_path / "nowhere").exists()


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A folder with one FINISHED toy run, then made read-only; yields (folder, finished run id).

    Root ignores file modes, so as root the folder is a tmpfs mounted read-only instead. The run
    is made in a subprocess, so that no open database handle keeps the mount busy."""
    folder = tmp_path / "store"
    folder.mkdir()
    as_root = os.geteuid() == 0
    if as_root and os.system(f"mount -t tmpfs -o size=64m tmpfs {folder} 2>/dev/null") != 0:
        pytest.skip("running as root without permission to mount a read-only file system")
    try:
        made = _cli_at(f"sqlite:///{folder / 'mlflow.db'}", "run", "toy", "--set", "seed=7", cwd=tmp_path)
        assert made.returncode == 0, made.stdout + made.stderr
        [(run_id, status)] = _runs(folder / "mlflow.db")
        assert status == "FINISHED"
        if as_root:
            assert os.system(f"mount -o remount,ro {folder}") == 0
        else:
            folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
        yield folder, run_id
    finally:
        if as_root:
            os.system(f"umount {folder} 2>/dev/null || umount -l {folder}")  # lazy: never leave a mount behind
        else:
            folder.chmod(stat.S_IRWXU)


def _runs(db: Path) -> list[tuple[str, str]]:
    """(run id, status) of every run, read with SQLite in read-only mode and closed again."""
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("select run_uuid, status from runs").fetchall()
    finally:
        con.close()


def test_read_only_store_is_named_with_the_fix_and_keeps_its_runs(read_only_dir, tmp_path: Path) -> None:
    folder, run_id = read_only_dir
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    result = _cli_at(uri, "sweep", "toy", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is read-only" in result.stderr and "make it writable" in result.stderr
    assert _runs(folder / "mlflow.db") == [(run_id, "FINISHED")]
    # the leaderboard only reads: it still renders the recorded run
    site = _cli_at(uri, "leaderboard", "--out", str(tmp_path / "site"), cwd=tmp_path)
    assert site.returncode == 0, site.stdout + site.stderr
    assert run_id in "".join(p.read_text() for p in (tmp_path / "site" / "config").glob("*.html"))


def test_read_only_store_file_is_named(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes read-only files; the read-only folder test covers root")
    Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "mlflow.db").chmod(stat.S_IRUSR)
    with pytest.raises(TrackingError, match="is read-only; make it writable"):
        Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_unreachable_tracking_server_fails_fast_with_the_fix(tmp_path: Path) -> None:
    started = time.monotonic()
    result = _cli_at("http://127.0.0.1:1", "run", "toy", cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot reach the MLflow tracking server http://127.0.0.1:1" in result.stderr
    assert "mlflow server" in result.stderr and "MLFLOW_TRACKING_URI" in result.stderr
    assert elapsed < 60  # seconds (interpreter start-up included), not MLflow's minutes of retries
    assert not (tmp_path / "mlflow.db").exists()


# --------------------------------------------------------------------------- corrupt caches and data


def _tiny_mnist(root: Path, truncate: bool) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 64), ("t10k", 16)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8).tobytes()
        labels = rng.integers(0, 10, size=n, dtype=np.uint8).tobytes()
        if truncate and prefix == "train":
            images = images[: len(images) // 3]  # a download cut short
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(np.array([0x803, n, 28, 28], dtype=">i4").tobytes() + images)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(np.array([0x801, n], dtype=">i4").tobytes() + labels)


def test_truncated_dataset_file_is_named_with_the_fix(tmp_path: Path) -> None:
    from suite import data

    _tiny_mnist(tmp_path / "good", truncate=False)
    assert len(data.torchvision_split("mnist", tmp_path / "good")[0]) == 64
    _tiny_mnist(tmp_path / "bad", truncate=True)
    with pytest.raises(ValueError, match="corrupt or truncated .* delete .*MNIST"):
        data.torchvision_split("mnist", tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="not found under"):
        data.torchvision_split("mnist", tmp_path)  # no MNIST folder at all


def test_cache_file_truncated_mid_write_is_detected_and_rebuilt(tmp_path: Path, caplog) -> None:
    """A file cut short (a crash of a writer that did not rename atomically, a full disk) is not
    trusted: the loader notices, logs, recomputes and replaces it."""
    weights = {"w": np.arange(1000, dtype=np.float32).reshape(10, 100)}
    first = cached_arrays({"model": "m"}, lambda: weights, shapes={"w": (10, 100)}, root=tmp_path)
    assert not first.hit
    data = first.path.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        first.path.write_bytes(data[:cut])
        calls = []
        again = cached_arrays({"model": "m"}, lambda: calls.append(1) or weights, shapes={"w": (10, 100)}, root=tmp_path)
        assert not again.hit and calls == [1] and np.array_equal(again.arrays["w"], weights["w"])
        assert "ignoring unreadable cache file" in caplog.text
        assert cached_arrays({"model": "m"}, lambda: 1 / 0, shapes={"w": (10, 100)}, root=tmp_path).hit


def test_a_writer_killed_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    """SIGKILL a process while it writes a large cache file: the target keeps its old content."""
    import subprocess
    import sys

    target = tmp_path / "model.bin"
    with atomic_write(target) as f:
        f.write(b"old model")
    script = ("import sys, time; from pathlib import Path; from suite.cache import atomic_write\n"
              "with atomic_write(Path(sys.argv[1])) as f:\n"
              "    for _ in range(10_000):\n"
              "        f.write(b'x' * 65536); f.flush(); print('writing', flush=True); time.sleep(0.01)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
    for _ in range(5):
        assert proc.stdout.readline() == "writing\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert target.read_bytes() == b"old model"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "model.bin"]
    assert all(name.startswith(".model.bin.") and name.endswith(".tmp") for name in leftovers)


def test_a_store_killed_while_being_created_is_never_half_migrated(tmp_path: Path) -> None:
    """A new SQLite store is migrated under a temporary name and renamed into place: what a process
    killed mid-migration leaves behind is that temporary file, which the next open removes."""
    leftover = tmp_path / ".mlflow.db.12345.creating"
    leftover.write_bytes(b"SQLite format 3\x00 half a migration")
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert tracker.experiment_id("toyfault") and not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlflow.db.lock"]
