"""suite.cache.build_once: concurrent callers of one entry build it once; a bad file is rebuilt."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from suite.cache import atomic_write, build_once


def _load(path: Path) -> str | None:
    text = path.read_text() if path.exists() else ""
    return text if text.startswith("built") else None  # anything else is an unusable file


def _build(path: Path) -> None:
    with open(path.parent / "builds.log", "a") as log:
        log.write(f"{os.getpid()}\n")
    time.sleep(0.5)  # long enough that the other callers arrive while this one builds
    with atomic_write(path, "w") as f:
        f.write(f"built by {os.getpid()}")


def _call(path: str, out: multiprocessing.Queue) -> None:
    out.put(build_once(Path(path), _load, _build))


def test_concurrent_callers_build_once_and_all_read_the_same_file(tmp_path: Path) -> None:
    target = tmp_path / "entry.txt"
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    workers = [ctx.Process(target=_call, args=(str(target), out)) for _ in range(3)]
    for w in workers:
        w.start()
    results = [out.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    assert len((tmp_path / "builds.log").read_text().split()) == 1
    assert len({value for value, _ in results}) == 1
    assert sorted(hit for _, hit in results) == [False, True, True]  # one built, two waited and read


def test_an_unusable_file_is_rebuilt(tmp_path: Path) -> None:
    target = tmp_path / "entry.txt"
    target.write_text("half a fi")
    value, hit = build_once(target, _load, _build)
    assert value.startswith("built") and not hit
    assert build_once(target, _load, _build) == (value, True)
