"""A small generic name -> object registry with helpful errors.

Holds the tasks (``suite.task.register_task`` adds to it) and each family's methods
(``suite.method.MethodRegistry``)::

    TASKS: Registry[type[Task]] = Registry("task")
    TASKS.add("dpsgd", DPSGDTask)
    TASKS.get("dpsgdd")  # UsageError: unknown task 'dpsgdd'; did you mean 'dpsgd'? ...
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

from suite.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; duplicate names and unknown names are errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, obj: T) -> None:
        existing = self._items.get(name)
        if existing is not None and existing is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered by {existing!r}")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UsageError(unknown_name_message(self.kind, name, self.names())) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """'unknown task 'x'; did you mean 'y'? known tasks: a, b' -- shared by every lookup."""
    msg = f"unknown {kind} {name!r}"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        msg += f"; did you mean {close[0]!r}?"
    return msg + f" (known {kind}s: {', '.join(known) or 'none'})"
