"""What a run ran on: package versions, torch threads, CPU, git commit.

Computed once per process and cached: a sweep's cells share it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import suite

_ROOT = Path(suite.__file__).resolve().parent.parent


@functools.cache
def git_commit() -> str:
    """The project's commit, with ``-dirty`` when tracked files differ from it; ``unknown`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_ROOT, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


@functools.cache
def packages() -> tuple[str, ...]:
    """``name==version`` of every installed distribution (what ``pip freeze`` lists)."""
    found = {
        f"{dist.metadata['Name']}=={dist.version}"
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"]
    }
    return tuple(sorted(found, key=str.lower))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict[str, Any]:
    """The environment of this process, as logged with every run."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "git_commit": git_commit(),
        "suite_version": suite.__version__,
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info.update(
            torch=torch.__version__,
            torch_threads=torch.get_num_threads(),
            cuda=torch.cuda.is_available(),
            cuda_device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        )
    info["packages"] = list(packages())
    return info
