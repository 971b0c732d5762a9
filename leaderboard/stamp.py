"""Whether a built site is up to date with its store: a second ``make bench`` with nothing changed
need not render the whole site again (most of a cached rerun's time).

A site's stamp is a digest of what the board is rendered from: every row a reader of the SQLite
store sees (experiments, runs, params, tags, latest metrics, and the count and newest timestamp of
the metric history), the claims judged on it, and the source of the code that renders and judges
(``leaderboard/``, ``suite/``). Run artifacts (``result.json``, per-example scores) are written
before a run ends and never change after, so the runs' rows stand for them. Only SQLite stores
get a stamp (read with :mod:`sqlite3`, without importing MLflow); any other store, or a store the
query cannot read, is rendered every time.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from suite.store import sqlite_path

STAMP = ".leaderboard-stamp"
MANIFEST = ".leaderboard-files"
_TABLES = (("experiments", "experiment_id"), ("runs", "run_uuid"), ("params", "run_uuid, key"),
           ("tags", "run_uuid, key"), ("latest_metrics", "run_uuid, key"))
_CODE = [Path(__file__).resolve().parent, Path(__file__).resolve().parent.parent / "suite"]


def site_stamp(uri: str, claims: Sequence[Mapping[str, Any]]) -> str | None:
    """The digest of the store at ``uri``, the claims and the rendering code; None when it cannot be had."""
    db = sqlite_path(uri)
    if db is None or not db.is_file():
        return None
    digest = hashlib.sha256(json.dumps(list(claims), sort_keys=True, default=str).encode())
    for folder in _CODE:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix in (".py", ".html", ".css", ".js"):
                digest.update(path.as_posix().encode() + path.read_bytes())
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            for table, order in _TABLES:
                for row in connection.execute(f"SELECT * FROM {table} ORDER BY {order}"):  # noqa: S608 - fixed names
                    digest.update(repr(row).encode())
            digest.update(repr(connection.execute("SELECT count(*), max(timestamp) FROM metrics").fetchone()).encode())
        finally:
            connection.close()
    except sqlite3.Error:
        return None
    return digest.hexdigest()


def up_to_date(out: Path, stamp: str | None) -> bool:
    """True when ``out`` holds a complete build stamped ``stamp``."""
    if stamp is None or not (out / STAMP).is_file() or (out / STAMP).read_text().strip() != stamp:
        return False
    manifest = out / MANIFEST
    return manifest.is_file() and all((out / name).is_file() for name in manifest.read_text().split())


def write_stamp(out: Path, stamp: str | None) -> None:
    """Mark ``out`` as built from ``stamp`` (or unmark it: None)."""
    if stamp is None:
        (out / STAMP).unlink(missing_ok=True)
    else:
        (out / STAMP).write_text(stamp + "\n")
