"""What the leaderboard knows about a task version: metric directions and units, Pareto pairs.

All of it comes from the runs' ``result.json`` (the result schema contract): each holds its
task's full declared schema (every metric's direction, unit and description, logged or not),
its Pareto pairs and its privacy unit, so the board renders a store whose task code it cannot
import. ``result.json`` files written before the full schema was (task versions of older
checkouts) still give the direction and unit of each metric they logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from suite.schema import AXES, Metric

_UNKNOWN = Metric("none")


@dataclass(frozen=True)
class CurveSpec:
    """A line per configuration through metrics (``Curve`` in ``suite.schema``), as ``result.json`` has it."""

    name: str
    title: str
    x_label: str
    y_label: str
    points: tuple[tuple[float, str], ...]
    x_scale: str = "linear"
    description: str = ""
    guides: tuple[tuple[float, str], ...] = ()

    @classmethod
    def from_json(cls, payload: Any) -> CurveSpec | None:
        """None for a malformed entry (a store is data; the site still renders)."""
        try:
            points = tuple((float(x), str(key)) for x, key in payload["points"])
            guides = tuple((float(y), str(label)) for y, label in payload.get("guides") or [])
            return cls(str(payload["name"]), str(payload.get("title") or payload["name"]),
                       str(payload.get("x_label") or ""), str(payload.get("y_label") or ""), points,
                       str(payload.get("x_scale") or "linear"), str(payload.get("description") or ""), guides)
        except (KeyError, TypeError, ValueError):
            return None


@dataclass
class TaskSchema:
    """The result schema of one task version, merged over its configs' ``result.json`` files."""

    task: str
    version: str
    description: str = ""
    pareto: list[tuple[str, str]] = field(default_factory=list)
    metrics: dict[str, Metric] = field(default_factory=dict)
    curves: list[CurveSpec] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the task's caveats (Task.notes), from result.json only

    def merge(self, payload: dict[str, Any]) -> None:
        """Add what one ``result.json`` declares (phase timers differ between configs)."""
        self.description = self.description or str(payload.get("description") or "")
        for note in payload.get("notes") or []:
            if isinstance(note, str) and note.strip() and note not in self.notes:
                self.notes.append(note)
        for pair in payload.get("pareto") or []:
            if len(pair) == 2 and tuple(pair) not in self.pareto:
                self.pareto.append((str(pair[0]), str(pair[1])))
        declared = {**(payload.get("metrics") or {}), **(payload.get("schema") or {})}
        for key, spec in declared.items():
            if key not in self.metrics and isinstance(spec, dict):
                self.metrics[key] = _metric(spec)
        for entry in payload.get("curves") or []:
            curve = CurveSpec.from_json(entry)
            if curve is not None and curve.name not in {c.name for c in self.curves}:
                self.curves.append(curve)

    def spec(self, key: str) -> Metric:
        return self.metrics.get(key, _UNKNOWN)


def _metric(spec: dict[str, Any]) -> Metric:
    direction = spec.get("direction")
    return Metric(direction if direction in ("higher", "lower") else "none", str(spec.get("unit") or ""),
                  str(spec.get("description") or ""), spec.get("per_privacy_unit") is not False)


def axis_of(key: str) -> str:
    """``utility`` of ``utility/accuracy``; metrics outside the four axes sort last as ``other``."""
    axis = key.split("/", 1)[0]
    return axis if axis in AXES else "other"
