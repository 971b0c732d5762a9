"""What a task's run gets besides its config: the tier, data, progress, phase timers and step history."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunContext:
    """What a task's ``run`` gets besides its config: tier, data, progress and phase timers."""

    tier: str
    data_dir: Path | None = None
    artifact_dir: Path | None = None
    report: Callable[[str, float, float], None] = lambda desc, done, total: None
    phases: dict[str, float] = field(default_factory=dict)
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase (``train``, ``eval``, ...); the runner logs it as ``compute/<name>_s``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start

    def progress(self, desc: str, done: float, total: float) -> None:
        """Report progress of long work (shown as a live bar with ETA)."""
        self.report(desc, done, total)

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        """Record declared metrics at a step (a round, an epoch): logged as MLflow metric history.

        The run's returned metrics stay the headline values; the history shows how they got there.
        """
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        self.history.append((int(step), {k: float(v) for k, v in metrics.items()}))
