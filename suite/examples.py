"""Per-example scores of a run's test metric: the run artifact ``examples/<axis>.<name>.json``.

A task records them with :meth:`suite.task.RunContext.record_predictions` (a classifier's
predicted and true labels on the test set) or :meth:`~suite.task.RunContext.record_example_values`
(anything else, e.g. the loss of each held-out token). They let two runs be compared example by
example (McNemar, a paired bootstrap over test examples). Record public test data only, never
private training data.

The format is small and checkable:

* ``examples_sha256`` digests the test examples in order (inputs and labels, see :func:`digest`),
  so two runs are compared example by example only when they scored the same examples in the
  same order;
* the run's metric must equal ``transform(sum(values) / sum(weights))``; the runner checks this
  before logging and fails the run when the two disagree.

>>> s = classification("utility/accuracy", predicted=[1, 2, 0], target=[1, 2, 2], examples="abc")
>>> s.value(), s.values
(0.6666666666666666, (1.0, 1.0, 0.0))
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from suite.schema import check_metric_key

FORMAT = "suite.examples/1"
TRANSFORMS = ("identity", "exp")
_REL_TOL = 1e-4  # float32 evaluation loops and float64 sums agree far closer; one flipped example does not


@dataclass(frozen=True)
class ExampleScores:
    """What one run scored on each test example, for one metric."""

    metric: str  # the run-level metric these values reproduce, e.g. utility/accuracy
    examples: str  # SHA-256 of the test examples, in order
    values: tuple[float, ...]  # per example (1.0/0.0 for a correct/wrong prediction, a token's loss, ...)
    weights: tuple[float, ...] | None = None  # per example; None: all 1
    transform: Literal["identity", "exp"] = "identity"  # metric = transform(sum(values) / sum(weights))
    block: int = 1  # consecutive examples resampled together (dependent ones, e.g. tokens of one text)
    predicted: tuple[int, ...] | None = None  # classification: predicted labels
    target: tuple[int, ...] | None = None  # classification: true labels

    def __post_init__(self) -> None:
        check_metric_key(self.metric)
        if not self.values:
            raise ValueError(f"{self.metric}: no per-example values")
        if self.weights is not None and len(self.weights) != len(self.values):
            raise ValueError(f"{self.metric}: {len(self.weights)} weights for {len(self.values)} values")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"{self.metric}: transform must be one of {TRANSFORMS}, got {self.transform!r}")
        if self.block < 1:
            raise ValueError(f"{self.metric}: block must be >= 1, got {self.block}")
        if not all(math.isfinite(v) for v in self.values):
            raise ValueError(f"{self.metric}: per-example values must be finite")

    @property
    def n(self) -> int:
        return len(self.values)

    def value(self) -> float:
        """The run-level metric these per-example values give."""
        weight = sum(self.weights) if self.weights is not None else float(self.n)
        mean = math.fsum(self.values) / weight
        return math.exp(mean) if self.transform == "exp" else mean

    def agrees_with(self, metric_value: float) -> bool:
        return math.isclose(self.value(), metric_value, rel_tol=_REL_TOL, abs_tol=1e-9)

    def blocks(self) -> tuple[list[float], list[float]]:
        """Values and weights summed over consecutive blocks of ``block`` examples (the resampled units)."""
        weights = self.weights if self.weights is not None else (1.0,) * self.n
        starts = range(0, self.n, self.block)
        return ([math.fsum(self.values[i:i + self.block]) for i in starts],
                [math.fsum(weights[i:i + self.block]) for i in starts])

    @property
    def artifact(self) -> str:
        """The artifact path it is logged under: ``examples/utility.accuracy.json``."""
        return f"examples/{self.metric.replace('/', '.')}.json"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT, "metric": self.metric, "n": self.n,
                               "examples_sha256": self.examples, "transform": self.transform, "block": self.block,
                               "value": self.value()}
        if self.predicted is not None and self.target is not None:
            out.update(kind="classification", predicted=list(self.predicted), target=list(self.target))
        else:
            out.update(kind="values", values=list(self.values),
                       weights=None if self.weights is None else list(self.weights))
        return out

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> ExampleScores:
        """Read what :meth:`to_json` wrote; an unknown format is an error."""
        if payload.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} record (format {payload.get('format')!r})")
        common = {"metric": payload["metric"], "examples": payload["examples_sha256"],
                  "transform": payload.get("transform", "identity"), "block": int(payload.get("block", 1))}
        if payload.get("kind") == "classification":
            return classification(predicted=payload["predicted"], target=payload["target"], **common)
        weights = payload.get("weights")
        return cls(values=tuple(float(v) for v in payload["values"]),
                   weights=None if weights is None else tuple(float(w) for w in weights), **common)


def classification(metric: str, *, predicted: Iterable[int], target: Iterable[int], examples: str,
                   **extra: Any) -> ExampleScores:
    """Per-example correctness of a classifier: the metric is the accuracy."""
    predicted, target = tuple(int(p) for p in predicted), tuple(int(t) for t in target)
    if len(predicted) != len(target):
        raise ValueError(f"{metric}: {len(predicted)} predictions for {len(target)} labels")
    values = tuple(1.0 if p == t else 0.0 for p, t in zip(predicted, target))
    return ExampleScores(metric, examples, values, predicted=predicted, target=target, **extra)


class ExampleDigest:
    """SHA-256 of test examples fed batch by batch: ``update(inputs, labels)`` per batch.

    Each argument position (inputs, labels, ...) is hashed as one stream, with its dtype and the
    shape of one example, so the digest does not depend on how the examples were batched.
    """

    def __init__(self) -> None:
        self._streams: list[Any] = []
        self._layout: list[str] = []

    def update(self, *arrays: Any) -> ExampleDigest:
        import numpy as np

        if self._streams and len(arrays) != len(self._streams):
            raise ValueError(f"every batch needs the same {len(self._streams)} arrays, got {len(arrays)}")
        for i, array in enumerate(arrays):
            a = np.ascontiguousarray(np.asarray(_cpu(array)))
            layout = f"{a.dtype.str}{a.shape[1:]}"
            if i == len(self._streams):
                self._streams.append(hashlib.sha256())
                self._layout.append(layout)
            elif self._layout[i] != layout:
                raise ValueError(f"array {i} changed from {self._layout[i]} to {layout} between batches")
            self._streams[i].update(a.tobytes())
        return self

    def hexdigest(self) -> str:
        total = hashlib.sha256(FORMAT.encode())
        for layout, stream in zip(self._layout, self._streams):
            total.update(layout.encode() + stream.digest())
        return total.hexdigest()


def digest(*arrays: Any) -> str:
    """The ``examples`` digest of whole test arrays (numpy arrays, CPU tensors, sequences): the same
    as feeding them to :class:`ExampleDigest` in batches."""
    return ExampleDigest().update(*arrays).hexdigest()


def _cpu(array: Any) -> Any:
    detach = getattr(array, "detach", None)  # a torch tensor, without importing torch
    return detach().cpu() if detach is not None else array


def check_against(recorded: Sequence[ExampleScores], metrics: Mapping[str, float]) -> None:
    """Raise unless every recorded metric was returned, once, with the value its examples give."""
    seen = set()
    for scores in recorded:
        if scores.metric in seen:
            raise ValueError(f"per-example scores of {scores.metric} were recorded twice")
        seen.add(scores.metric)
        if scores.metric not in metrics:
            raise ValueError(f"per-example scores were recorded for {scores.metric}, which the run did not return")
        if not scores.agrees_with(metrics[scores.metric]):
            raise ValueError(f"the per-example scores recorded for {scores.metric} give {scores.value():.6g}, but "
                             f"the run returned {metrics[scores.metric]:.6g}: they are not the same evaluation")
