"""What the leaderboard knows about a task version: metric directions and units, Pareto pairs.

It comes from the runs' ``result.json`` (the result schema contract). A metric logged after
``result.json`` was written (``compute/slowdown`` is linked once the reference run exists)
takes its direction and unit from the registered task, when the registered task is the same
version; otherwise it is shown without a direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from suite.schema import AXES


@dataclass(frozen=True)
class MetricSpec:
    """Direction (``higher``, ``lower`` or ``none``), unit and meaning of one metric."""

    direction: str = "none"
    unit: str = ""
    description: str = ""


@dataclass
class TaskSchema:
    """The result schema of one task version, merged over its configs' ``result.json`` files."""

    task: str
    version: str
    description: str = ""
    pareto: list[tuple[str, str]] = field(default_factory=list)
    metrics: dict[str, MetricSpec] = field(default_factory=dict)
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
        for key, spec in (payload.get("metrics") or {}).items():
            if key not in self.metrics and isinstance(spec, dict):
                self.metrics[key] = MetricSpec(str(spec.get("direction") or "none"), str(spec.get("unit") or ""),
                                               str(spec.get("description") or ""))

    def fill_from(self, other: TaskSchema | None) -> None:
        """Take metrics this schema lacks from ``other`` (the registered task of the same version)."""
        if other is None:
            return
        self.description = self.description or other.description
        self.pareto = self.pareto or list(other.pareto)  # result.json files written before pareto existed
        for key, spec in other.metrics.items():
            self.metrics.setdefault(key, spec)

    def spec(self, key: str) -> MetricSpec:
        return self.metrics.get(key, MetricSpec())


def axis_of(key: str) -> str:
    """``utility`` of ``utility/accuracy``; metrics outside the four axes sort last as ``other``."""
    axis = key.split("/", 1)[0]
    return axis if axis in AXES else "other"


def registered_schema(task: str, version: str | None) -> TaskSchema | None:
    """The schema of the registered task ``task`` if it exists (and is ``version``, when given)."""
    try:
        from suite.task import discover

        registry = discover()
        if task not in registry:
            return None
        cls = registry.get(task)
    except Exception:  # a broken or missing task module must not stop the site from rendering
        return None
    if version is not None and cls.version != version:
        return None
    metrics = {k: MetricSpec(m.direction, m.unit, m.description) for k, m in cls.result_schema().items()}
    return TaskSchema(task, cls.version, cls.description, [tuple(p) for p in cls.pareto], metrics)
