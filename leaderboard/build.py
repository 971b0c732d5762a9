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

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from leaderboard.aggregate import Section, build_sections
from leaderboard.claims import evaluate_claims, store_tiers
from leaderboard.collect import collect
from leaderboard.paired import example_loader
from leaderboard.ties import mark_best, mark_headlines
from leaderboard.site import drawing, write_site
from suite.tracking import Tracker

from leaderboard.stamp import MANIFEST


def build_site(tracker: Tracker, out_dir: str | Path, claims: Sequence[Mapping[str, Any]] = ()) -> Path:
    """Render every ended run of ``tracker``'s store into ``out_dir``; return the index page's path.

    ``claims``: the tasks' claims in serialized form (:func:`suite.claims.declared`), judged on the
    store's runs for ``claims.html``; the board itself never imports a task.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs, schemas = collect(tracker)
    sections = build_sections(runs, schemas)
    with drawing(sections, out / "plots") as drawn:  # beside the paired tests
        sections, rows = judge(tracker, runs, schemas, claims, sections=sections)
        written = write_site(runs, sections, out, rows, drawn=drawn)
    _remove_stale(out, {p.relative_to(out).as_posix() for p in written})
    return out / "index.html"


def judge(tracker: Tracker, runs: Any, schemas: Any, claims: Sequence[Mapping[str, Any]],
          tiers: Sequence[str] | None = None,
          sections: list[Section] | None = None) -> tuple[list[Section], list[dict[str, Any]]]:
    """The sections with their best-or-tie marks (paired tests), and a row per claim and tier
    (default: every tier of the store). ``sections``: :func:`build_sections` of the runs, if made already."""
    sections = build_sections(runs, schemas) if sections is None else sections
    load = example_loader(lambda run_id, uri, name: tracker.read_json(run_id, name, artifact_uri=uri or None))
    for section in sections:
        mark_best(section, load)
        mark_headlines(section, load)
    rows = evaluate_claims(claims, sections, store_tiers(sections) if tiers is None else tiers, load)
    return sections, rows


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
