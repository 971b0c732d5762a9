"""Live progress on stderr: one bar for a sweep, one per running cell, each with an ETA."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

console = Console(stderr=True, highlight=False)


class Display:
    """Progress of a sweep (``total`` cells) and of each running cell."""

    def __init__(self, total: int, title: str = "sweep") -> None:
        self._progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False,
        )
        self._overall = self._progress.add_task(f"[bold]{title}", total=max(total, 1))
        self._cells: dict[Any, Any] = {}

    def __enter__(self) -> Display:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def cell_started(self, key: Any, label: str) -> None:
        self._cells[key] = self._progress.add_task(f"  {label}", total=None)

    def cell_progress(self, key: Any, desc: str, done: float, total: float) -> None:
        if key in self._cells:
            self._progress.update(self._cells[key], completed=done, total=total)

    def cell_ended(self, key: Any, line: str) -> None:
        task_id = self._cells.pop(key, None)
        if task_id is not None:
            self._progress.remove_task(task_id)
        self._progress.advance(self._overall)
        self._progress.console.print(line)

    def log(self, line: str) -> None:
        self._progress.console.print(line)
