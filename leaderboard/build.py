"""Build the static leaderboard site from the suite's MLflow store.

>>> from leaderboard.build import build_site
>>> from suite.tracking import Tracker
>>> build_site(Tracker(), "site")          # doctest: +SKIP
PosixPath('site/index.html')

``suite leaderboard --out site`` and ``make bench`` call it. The build is deterministic:
the same store gives byte-identical files (no build time inside, stable order, fixed SVG
ids). Files a previous build wrote and this one does not (a task that is gone) are removed;
nothing else in the output folder is touched.
"""

from __future__ import annotations

from pathlib import Path

from leaderboard.aggregate import build_sections
from leaderboard.collect import collect
from leaderboard.site import write_site
from suite.tracking import Tracker

MANIFEST = ".leaderboard-files"


def build_site(tracker: Tracker, out_dir: str | Path) -> Path:
    """Render every ended run of ``tracker``'s store into ``out_dir``; return the index page's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs, schemas = collect(tracker)
    sections = build_sections(runs, schemas)
    written = write_site(runs, sections, out)
    _remove_stale(out, {p.relative_to(out).as_posix() for p in written})
    return out / "index.html"


def _remove_stale(out: Path, written: set[str]) -> None:
    """Delete what the previous build listed in the manifest and this one did not write; list this build's."""
    manifest = out / MANIFEST
    previous = set(manifest.read_text().split()) if manifest.is_file() else set()
    for name in sorted(previous - written):
        path = out / name
        if path.is_file() and not Path(name).is_absolute() and ".." not in Path(name).parts:
            path.unlink()
            parent = path.parent
            if parent != out and not any(parent.iterdir()):
                parent.rmdir()
    manifest.write_text("".join(f"{name}\n" for name in sorted(written)))
