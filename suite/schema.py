"""The result schema: which metrics a task reports, their direction and units.

This is the contract between tasks, the MLflow tracking module and the leaderboard.
Metric keys are ``<axis>/<name>`` with axis one of utility, privacy, compute, bandwidth.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

AXES = ("utility", "privacy", "compute", "bandwidth")
PRIVACY_UNITS = ("example", "label", "client", "none")
_KEY = re.compile(r"^(utility|privacy|compute|bandwidth)/[a-z0-9_]+$")

Direction = Literal["higher", "lower", "none"]


@dataclass(frozen=True)
class Metric:
    """One metric a task reports: which way is better, its unit, and what it means."""

    direction: Direction
    unit: str = ""
    description: str = ""
    # Privacy metrics are shown per unit of privacy (example, label, client): a guarantee holds for one
    # unit and runs without one have none. False for a measurement of the trained model that means the
    # same on every run, private or not (the exposure of planted canaries): one column across all runs.
    per_privacy_unit: bool = True

    def to_json(self) -> dict[str, str | bool]:
        return asdict(self)


@dataclass(frozen=True)
class Curve:
    """A line per configuration through declared metrics, e.g. exposure against repetitions.

    ``points`` pairs each x value with the metric key whose mean is y there; the leaderboard draws
    one line per configuration of a table (mean over seeds, 95% CI as error bars), from the runs'
    ``result.json`` (it never imports the task).
    """

    name: str  # short id, used in the plot's file name
    title: str
    x_label: str
    y_label: str
    points: tuple[tuple[float, str], ...]
    x_scale: Literal["linear", "log", "symlog"] = "linear"  # symlog: a log axis that also shows x = 0
    description: str = ""  # shown under the plot
    guides: tuple[tuple[float, str], ...] = ()  # horizontal reference lines (y, label), e.g. a chance level

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "points": [[x, key] for x, key in self.points],
                "guides": [[y, label] for y, label in self.guides]}


# Metrics every run gets from the runner's meters, whatever the task.
COMMON_METRICS: dict[str, Metric] = {
    "compute/wall_s": Metric("lower", "s", "wall time of the task's run() in its process"),
    "compute/cpu_s": Metric("lower", "s", "CPU time (all threads) of the task's run()"),
    "compute/peak_rss_mb": Metric("lower", "MiB", "peak resident memory of the process that ran the task"),
}


def check_metric_key(key: str) -> None:
    if not _KEY.match(key):
        raise ValueError(
            f"metric key {key!r} must look like '<axis>/<name>' with axis in {AXES} "
            "and name in lower-case letters, digits and '_'"
        )


def check_schema(metrics: Mapping[str, Metric]) -> None:
    """Raise if a task's declared metrics break the naming contract."""
    for key, spec in metrics.items():
        check_metric_key(key)
        if spec.direction not in ("higher", "lower", "none"):
            raise ValueError(f"metric {key!r}: direction must be 'higher', 'lower' or 'none'")


def validate_result(result: Mapping[str, float], declared: Mapping[str, Metric]) -> dict[str, float]:
    """Check a run's metrics against the declared schema; return them as plain floats.

    Undeclared keys and non-finite values (NaN, inf) are errors: a run that produced
    NaN did not produce a result.
    """
    out: dict[str, float] = {}
    for key, value in result.items():
        if key not in declared:
            raise ValueError(
                f"run returned metric {key!r}, which its task does not declare "
                f"(declared: {', '.join(sorted(declared))})"
            )
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"metric {key!r} is {value!r}, not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"metric {key!r} is {number} (not finite)")
        out[key] = number
    return out
