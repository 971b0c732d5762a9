"""suite.cache: atomic writes keep the old file whole when a write fails part-way."""

from __future__ import annotations

from pathlib import Path

import pytest

from suite.cache import atomic_write, cache_root


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "model.bin"
    with atomic_write(target) as f:
        f.write(b"complete")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"half of a new")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"complete"
    assert [p.name for p in target.parent.iterdir()] == ["model.bin"]


def test_cache_root_is_per_family_under_suite_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SUITE_CACHE", str(tmp_path))
    assert cache_root("pruning") == tmp_path / "pruning"


def _build_or_read_slowly(path: str, log: str, barrier) -> None:
    """One process of the race below: a slow build that records each time it runs."""
    import time

    from suite.cache import build_once

    def build() -> str:
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(0.5)  # long enough for the other process to arrive while the file is missing
        return "payload"

    def write(p: Path, value: str) -> None:
        with atomic_write(p, "w") as f:
            f.write(value)

    barrier.wait()
    value, _ = build_once(Path(path), read=lambda p: p.read_text() if p.exists() else None, build=build, write=write)
    assert value == "payload"


def test_build_once_builds_one_entry_once_when_processes_race(tmp_path: Path) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(3)
    path, log = tmp_path / "entry.txt", tmp_path / "builds.log"
    workers = [ctx.Process(target=_build_or_read_slowly, args=(str(path), str(log), barrier)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert log.read_text() == "built\n"  # the others waited on the lock, then read the builder's file
    assert path.read_text() == "payload"


def test_build_once_rebuilds_what_read_rejects(tmp_path: Path) -> None:
    from suite.cache import build_once

    path = tmp_path / "entry.txt"
    path.write_text("corrupt")
    read = lambda p: p.read_text() if p.exists() and p.read_text() != "corrupt" else None  # noqa: E731
    value, hit = build_once(path, read=read, build=lambda: "fresh", write=lambda p, v: p.write_text(v))
    assert (value, hit, path.read_text()) == ("fresh", False, "fresh")
