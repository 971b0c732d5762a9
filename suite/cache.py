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

:func:`build_once` is the one helper for a cached file: under a lock on ``<file>.lock``, a file
its loader accepts is reused, else the value is built and written atomically, so parallel cells
that need the same file build it once while the others wait and then read it.
:func:`cached_arrays` is that for a dict of numpy arrays, and checks on load: a file that does not
parse or lacks an expected array of the expected shape is recomputed and replaced.

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
from typing import IO, Any, Generic, TypeVar

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
def file_lock(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on ``<path>.lock`` for the block (``flock``: released if the process dies);
    yields True. With ``wait=False`` it does not wait: while another process holds the lock it yields
    False and holds nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Built(Generic[T]):
    value: T
    hit: bool  # read from disk rather than built
    path: Path


def build_once(path: Path, *, load: Callable[[Path], T | None], build: Callable[[], T],
               save: Callable[[T, IO[bytes]], None]) -> Built[T]:
    """The value cached at ``path``, built once however many processes ask for it at the same time.

    A whole file is read without locking (files are renamed into place whole, :func:`atomic_write`):
    when ``load(path)`` returns a value, that value is reused; ``load`` returns None for a file it
    cannot use (saying why in a log line). Otherwise the caller takes :func:`file_lock` of ``path``
    and loads again, since another process may have built the file while this one waited; only
    when it is still missing or unusable does ``build()`` make the value, and ``save(value, file)``
    write it through :func:`atomic_write`, the lock held until the file is complete. A failure to
    write only costs the cache.

    >>> import json, tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     args = dict(load=lambda p: json.loads(p.read_text()), save=lambda v, f: f.write(json.dumps(v).encode()))
    ...     first = build_once(Path(d) / "v.json", build=lambda: [1, 2], **args)
    ...     again = build_once(Path(d) / "v.json", build=lambda: [3], **args)
    >>> first.hit, again.hit, again.value
    (False, True, [1, 2])
    """
    if path.exists():
        value = load(path)
        if value is not None:
            return Built(value, True, path)
    with file_lock(path):
        if path.exists():
            value = load(path)
            if value is not None:
                return Built(value, True, path)
        value = build()
        try:
            with atomic_write(path) as f:
                save(value, f)
        except OSError as exc:
            log.warning("could not write cache file %s (%s)", path, exc)
        return Built(value, False, path)


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

    Files go to ``root``, or else to :func:`cache_root` of ``family``; see :func:`build_once`.
    """
    if root is None and not family:
        raise ValueError("cached_arrays needs a family (or an explicit root directory)")
    path = (root or cache_root(family)) / f"{cache_key(parts)}.npz"

    def build() -> dict[str, np.ndarray]:
        arrays = compute()
        _check(arrays, shapes)
        return arrays

    built = build_once(path, load=lambda p: _load(p, shapes), build=build, save=lambda arrays, f: np.savez(f, **arrays))
    return Cached(built.value, built.hit, path)


def _load(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
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
