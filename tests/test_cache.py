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
