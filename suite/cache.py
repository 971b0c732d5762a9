"""On-disk caches of expensive intermediate results, keyed by the SHA-256 of what produced them.

Every family's cache lives in ``$SUITE_CACHE/<family>`` (default
``~/.cache/privacy-efficiency-suite/<family>``). Files are written to a temporary file in the
same directory and renamed into place (:func:`atomic_write`): a concurrent reader, or a reader
after a crash mid-write, sees the old file or the new one, never half of one. Readers check what
they load and recompute a file that does not parse.

Example, labeldp: PATE's teacher votes depend on the private labels, the partition and the teachers' training,
but not on epsilon or the aggregation noise; a sweep over epsilons therefore trains the same
teachers once per seed and reads their votes back in the other cells. The key hashes the
arrays themselves (features and labels as planted, canaries included), so a cache file can
never answer for different labels. The votes are computed without noise: the cache directory
holds data as sensitive as the private labels themselves, and only the per-cell noisy
aggregation (with that cell's seed and epsilon) is ever released.

:func:`cached_arrays` checks on load: a file that does not parse or lacks an expected array of
the expected shape is recomputed and replaced.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     first = cached_arrays({"n": 3}, lambda: {"a": np.arange(3)}, shapes={"a": (3,)}, root=Path(d))
...     again = cached_arrays({"n": 3}, lambda: {"a": np.zeros(3)}, shapes={"a": (3,)}, root=Path(d))
>>> first.hit, again.hit, again.arrays["a"].tolist()
(False, True, [0, 1, 2])
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cached:
    arrays: dict[str, np.ndarray]
    hit: bool  # read from disk rather than computed
    path: Path


def cache_root(family: str) -> Path:
    """``$SUITE_CACHE/<family>``, or ``~/.cache/privacy-efficiency-suite/<family>``."""
    base = os.environ.get("SUITE_CACHE") or Path.home() / ".cache" / "privacy-efficiency-suite"
    return Path(base).expanduser() / family


@contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success rename it over ``path``.

    On any error (or a kill) the temporary file is removed or left under a ``.tmp`` name,
    and ``path`` keeps its previous content: nobody ever reads a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cache_key(parts: Mapping[str, Any]) -> str:
    """SHA-256 over the sorted parts; arrays contribute their dtype, shape and bytes."""
    h = hashlib.sha256()
    for name in sorted(parts):
        value = parts[name]
        h.update(name.encode() + b"\0")
        if isinstance(value, np.ndarray):
            value = np.ascontiguousarray(value)
            h.update(f"{value.dtype.str}{value.shape}".encode() + b"\0")
            h.update(value.tobytes())
        else:
            h.update(repr(value).encode())
        h.update(b"\1")
    return h.hexdigest()


def cached_arrays(parts: Mapping[str, Any], compute: Callable[[], dict[str, np.ndarray]], *,
                  shapes: Mapping[str, tuple[int, ...]], family: str = "", root: Path | None = None) -> Cached:
    """The arrays ``compute()`` returns for ``parts``, from disk when a valid file holds them.

    Files go to ``root``, or else to :func:`cache_root` of ``family``.
    """
    if root is None and not family:
        raise ValueError("cached_arrays needs a family (or an explicit root directory)")
    path = (root or cache_root(family)) / f"{cache_key(parts)}.npz"
    arrays = _load(path, shapes)
    if arrays is not None:
        return Cached(arrays, True, path)
    arrays = compute()
    _check(arrays, shapes)
    _store(path, arrays)
    return Cached(arrays, False, path)


def _load(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in shapes}
        _check(arrays, shapes)
        return arrays
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("ignoring unreadable cache file %s (%s); recomputing", path, exc)
        return None


def _check(arrays: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]) -> None:
    for name, shape in shapes.items():
        if name not in arrays or tuple(np.shape(arrays[name])) != tuple(shape):
            got = np.shape(arrays[name]) if name in arrays else "missing"
            raise ValueError(f"cached array {name!r}: expected shape {tuple(shape)}, got {got}")


def _store(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write next to ``path`` and rename into place; a failure to write only costs the cache."""
    try:
        with atomic_write(path) as f:
            np.savez(f, **arrays)
    except OSError as exc:
        log.warning("could not write cache file %s (%s)", path, exc)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (created if missing) for the block.

    The lock is advisory (``fcntl.flock``) and released by the kernel when the holder dies, so a
    killed builder never leaves the others waiting forever.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(path: Path, load: Callable[[Path], Any], build: Callable[[Path], None]) -> tuple[Any, bool]:
    """``load(path)``, after ``build(path)`` has made the file if no valid one exists; ``(value, hit)``.

    ``load`` returns None for a missing or invalid file (it checks what it reads); ``build`` writes the
    file (atomically, with :func:`atomic_write`). Concurrent callers for one path take a lock: one
    builds, the others wait and then read its file, so two cells of a sweep never build the same
    entry twice. ``hit`` is True when the file was there already (built by an earlier or a
    concurrent caller).
    """
    value = load(path)
    if value is not None:
        return value, True
    with file_lock(path):
        value = load(path)  # built by another process while this one waited for the lock
        if value is not None:
            return value, True
        build(path)
    value = load(path)
    if value is None:
        raise RuntimeError(f"cache entry {path} was built but does not load back")
    return value, False
