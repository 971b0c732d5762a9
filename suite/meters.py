"""Meters shared by every task: time, memory, FLOPs, model size.

Time and memory are measured by the runner around ``Task.run``; FLOPs and model size are
helpers a task calls on its own model. torch is imported inside the functions that need it.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Stopwatch:
    """Wall and process-CPU seconds between ``start()`` and ``stop()``."""

    wall_s: float = 0.0
    cpu_s: float = 0.0

    def start(self) -> Stopwatch:
        self._wall0 = time.perf_counter()
        self._cpu0 = time.process_time()
        return self

    def stop(self) -> Stopwatch:
        self.wall_s = time.perf_counter() - self._wall0
        self.cpu_s = time.process_time() - self._cpu0
        return self


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of the torch operations ``fn`` runs, by ``torch.utils.flop_counter.FlopCounterMode``.

    Example: ``count_flops(lambda: model(x).sum().backward())`` counts one training step's
    forward and backward pass.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def model_size(model: Any) -> dict[str, float]:
    """Parameter count and bytes of parameters plus buffers, as ``compute/`` metrics."""
    params = sum(p.numel() for p in model.parameters())
    nbytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return {"compute/params": float(params), "compute/model_bytes": float(nbytes)}
