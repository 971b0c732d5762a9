"""The toy family's config and methods registry: the keys every toy method reads.

Imported by the task (tests/toy/task.py) and by each method (tests/toy/methods/*.py) alike.
"""

from __future__ import annotations

from pydantic import Field

from suite.config import BaseConfig
from suite.method import Method, MethodRegistry


class ToyConfig(BaseConfig):
    sleep_s: float = Field(0.0, ge=0)  # time spent "training", in steps of 50 ms
    value: float = 0.5  # the accuracy the run reports, plus seed / 100


METHODS = MethodRegistry(ToyConfig, package="tests.toy.methods")


class ToyMethod(Method):
    """A toy method varies one step of the toy's run: what it makes of the trained value."""

    def outcome(self, config: ToyConfig, value: float) -> dict[str, float]:
        """The run's metrics from ``value`` (the configured value plus seed / 100)."""
        raise NotImplementedError
