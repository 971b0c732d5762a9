"""An on-disk cache of arrays keyed by the SHA-256 of everything that produced them.

PATE's teacher votes depend on the private labels, the partition and the teachers' training,
but not on epsilon or the aggregation noise; a sweep over epsilons therefore trains the same
teachers once per seed and reads their votes back in the other cells. The key hashes the
arrays themselves (features and labels as planted, canaries included), so a cache file can
never answer for different labels. The votes are computed without noise: the cache directory
holds data as sensitive as the private labels themselves, and only the per-cell noisy
aggregation (with that cell's seed and epsilon) is ever released.

Files live in ``$SUITE_CACHE`` (default ``~/.cache/privacy-efficiency-suite``) under
``labeldp/``, are written to a temporary file and renamed into place (a concurrent reader
sees the old file or the new one, never half of one), and are checked on load: a file that
does not parse or lacks an expected array of the expected shape is recomputed and replaced.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     first = cached_arrays({"n": 3}, lambda: {"a": np.arange(3)}, shapes={"a": (3,)}, root=Path(d))
...     again = cached_arrays({"n": 3}, lambda: {"a": np.zeros(3)}, shapes={"a": (3,)}, root=Path(d))
>>> first.hit, again.hit, again.arrays["a"].tolist()
(False, True, [0, 1, 2])
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cached:
    arrays: dict[str, np.ndarray]
    hit: bool  # read from disk rather than computed
    path: Path


def cache_root() -> Path:
    """``$SUITE_CACHE/labeldp``, or ``~/.cache/privacy-efficiency-suite/labeldp``."""
    base = os.environ.get("SUITE_CACHE") or Path.home() / ".cache" / "privacy-efficiency-suite"
    return Path(base).expanduser() / "labeldp"


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
                  shapes: Mapping[str, tuple[int, ...]], root: Path | None = None) -> Cached:
    """The arrays ``compute()`` returns for ``parts``, from disk when a valid file holds them."""
    path = (root or cache_root()) / f"{cache_key(parts)}.npz"
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
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        log.warning("could not write cache file %s (%s)", path, exc)
