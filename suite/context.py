"""What a task's run gets besides its config: the tier, data, progress, phase timers and step history."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from suite.examples import ExampleScores, classification


@dataclass
class RunContext:
    """What a task's ``run`` gets besides its config: tier, data, progress, phase timers, and where
    per-example test scores are recorded."""

    tier: str
    data_dir: Path | None = None
    artifact_dir: Path | None = None
    report: Callable[[str, float, float], None] = lambda desc, done, total: None
    phases: dict[str, float] = field(default_factory=dict)
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    examples: list[ExampleScores] = field(default_factory=list)

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

    def record_predictions(self, metric: str, *, predicted: Iterable[int], target: Iterable[int],
                           examples: str) -> None:
        """Record a classifier's prediction on each **public test** example behind ``metric`` (an accuracy).

        ``examples`` is the :func:`suite.examples.digest` of the test examples in the order scored.
        The runner logs them as the artifact ``examples/<axis>.<name>.json`` (never record private
        training data) and fails the run if their accuracy differs from the returned ``metric``.
        """
        self.examples.append(classification(metric, predicted=predicted, target=target, examples=examples))

    def record_example_values(self, metric: str, *, values: Iterable[float], examples: str,
                              weights: Iterable[float] | None = None, transform: str = "identity",
                              block: int = 1) -> None:
        """Record per-example values behind ``metric = transform(sum(values) / sum(weights))``.

        For example each held-out token's loss behind a perplexity (``transform="exp"``), with
        ``block`` consecutive tokens resampled together by the paired bootstrap, as they are not
        independent. Public test data only.
        """
        self.examples.append(ExampleScores(metric, examples, tuple(float(v) for v in values),
                                           None if weights is None else tuple(float(w) for w in weights),
                                           transform, block))  # type: ignore[arg-type]
