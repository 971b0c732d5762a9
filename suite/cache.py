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
from typing import IO, Any, TypeVar

import numpy as np

log = logging.getLogger(__name__)
T = TypeVar("T")


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


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``<path>.lock`` (``flock``) for the ``with`` block.

    The kernel drops the lock when its holder exits or is killed, so a crashed builder never
    leaves the others waiting. The lock file stays behind, empty; it is harmless.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(path: Path, *, read: Callable[[Path], T | None], build: Callable[[], T],
               write: Callable[[Path, T], None]) -> tuple[T, bool]:
    """The value cached at ``path``, built at most once however many processes ask at the same time.

    ``read(path)`` returns the value, or None when the file is absent or unusable (it says why in
    its own log line); ``build()`` computes the value; ``write(path, value)`` stores it (atomically,
    see :func:`atomic_write`). Returns ``(value, True)`` when it was read from disk.

    A whole file is read without locking. Otherwise the caller takes :func:`file_lock` and reads
    again, because another process may have built the file while this one waited; only when it is
    still missing does this process build and write it, holding the lock until the file is complete.

    >>> import tempfile, json
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = Path(d) / "answer.json"
    ...     read = lambda p: json.loads(p.read_text()) if p.exists() else None
    ...     write = lambda p, v: p.write_text(json.dumps(v))
    ...     first = build_once(path, read=read, build=lambda: {"x": 42}, write=write)
    ...     again = build_once(path, read=read, build=lambda: {"x": 0}, write=write)
    >>> first, again
    (({'x': 42}, False), ({'x': 42}, True))
    """
    value = read(path)
    if value is not None:
        return value, True
    with file_lock(path):
        value = read(path)
        if value is not None:
            return value, True
        value = build()
        write(path, value)
        return value, False


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
