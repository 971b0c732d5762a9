"""Timing helpers shared by the eager (:mod:`tasks.llm.measure`) and compiled (:mod:`tasks.llm.decode`)
decoding paths: which clock a speed is held against the memory-read bound with, and prefill/decode spans."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch


def busy_clock(device: Any) -> Callable[[], float]:
    """The clock speed is held against the memory-read bound with: this process's CPU time on a CPU, so that
    time spent waiting for a core on a shared machine counts neither for the decoding nor for the probe (on an
    idle machine it equals the wall clock for single-threaded work); the wall clock on a GPU."""
    return time.process_time if torch.device(device).type == "cpu" else time.perf_counter


def stamp(tensor: torch.Tensor, clock: Callable[[], float]) -> tuple[float, float]:
    """(wall, busy clock) now, once queued GPU work on ``tensor``'s device is done."""
    sync(tensor)
    return time.perf_counter(), clock()


def spans(start: tuple[float, float], first: tuple[float, float], end: tuple[float, float],
          busy_s: list[float] | None) -> tuple[float, float]:
    """Wall seconds of prefill and decode; their busy-clock seconds go into ``busy_s`` if given."""
    if busy_s is not None:
        busy_s[:] = [first[1] - start[1], end[1] - first[1]]
    return first[0] - start[0], end[0] - first[0]


def sync(tensor: torch.Tensor) -> None:
    """Wait for queued GPU work, so that wall-clock timers measure it."""
    if tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)
