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


def _build_in_process(path: str, log: str) -> None:
    import json
    import time

    from suite.cache import build_once

    def build() -> list[int]:
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(0.5)  # long enough for the other processes to be waiting on the lock
        return [1, 2, 3]

    built = build_once(Path(path), load=lambda p: json.loads(p.read_text()), build=build,
                       save=lambda value, f: f.write(json.dumps(value).encode()))
    assert built.value == [1, 2, 3]


def test_build_once_builds_one_file_once_across_processes(tmp_path: Path) -> None:
    import multiprocessing as mp

    path, log = tmp_path / "cache" / "value.json", tmp_path / "log"
    procs = [mp.get_context("fork").Process(target=_build_in_process, args=(str(path), str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log.read_text() == "built\n" and path.read_text() == "[1, 2, 3]"


def test_build_once_rebuilds_a_file_its_loader_refuses_and_survives_a_failed_save(tmp_path: Path) -> None:
    from suite.cache import build_once

    path = tmp_path / "value.bin"
    path.write_bytes(b"truncated")
    built = build_once(path, load=lambda p: p.read_bytes() if p.read_bytes() == b"whole" else None,
                       build=lambda: b"whole", save=lambda value, f: f.write(value))
    assert not built.hit and path.read_bytes() == b"whole"
    assert build_once(path, load=lambda p: p.read_bytes(), build=lambda: b"never", save=lambda v, f: None).hit

    def broken_save(value: bytes, f) -> None:  # noqa: ANN001 - a file object
        raise OSError("disk full")

    other = build_once(tmp_path / "other.bin", load=lambda p: None, build=lambda: b"v", save=broken_save)
    assert other.value == b"v" and not other.hit and not (tmp_path / "other.bin").exists()
