"""Entry point of a sweep's worker process: run one cell, send the result up a pipe.

The worker never writes to MLflow: the sweep's parent process is the single writer, so
parallel cells cannot lose or corrupt a write, and a killed worker leaves nothing half-logged.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from multiprocessing.connection import Connection

from runners.cell import Cell, execute
from runners.outcome import failure_reason
from suite import environment
from suite.task import discover, get_task

_PR_SET_PDEATHSIG = 1

# The value of RAY_ADDRESS in a cell's env while the sweep's Ray head for it is still starting: the
# worker waits for ("ray_address", address or None) on its pipe before it runs the cell, so that the
# sweep's loop goes on launching cells meanwhile.
AWAIT_RAY_HEAD = "<await the sweep's Ray head>"

# Imported by the sweep's fork server: what every cell would otherwise look up again
# (installed packages, the git commit, the task modules and their methods: a quarter of a second)
# is computed once and inherited by each worker.
environment.packages()
environment.git_commit()
try:
    for _name in discover():
        get_task(_name).methods()  # imports the family's method modules
except Exception:  # noqa: BLE001 - a broken task module fails its own cells, with its error, not the fork server
    pass


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its parent dies, so no orphan keeps computing."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the worker notices the closed pipe instead


def serve(conn: Connection) -> None:
    """A worker started ahead of its cell: wait for ``(cell, threads, env)`` on ``conn``, then run it
    as :func:`main` does. The fork costs tens of milliseconds; done while other cells compute, it
    is not on the next cell's path."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    try:
        cell, threads, env = conn.recv()
        if env.get("RAY_ADDRESS") == AWAIT_RAY_HEAD:
            kind, address = conn.recv()
            assert kind == "ray_address", kind
            env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"} | ({"RAY_ADDRESS": address} if address else {})
    except EOFError:
        return  # the sweep ended without a cell for this worker (or before its head was up)
    main(cell, threads, conn, env)


def main(cell: Cell, threads: int, conn: Connection, env: dict[str, str] | None = None) -> None:
    """Run ``cell`` with ``threads`` torch threads and ``env`` added to the environment; send its result."""
    os.environ.update(env or {})
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _die_with_parent()
    last = 0.0

    def report(desc: str, done: float, total: float) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= 0.2 or done >= total:
            last = now
            conn.send(("progress", desc, done, total))

    try:
        conn.send(("result", execute(cell, threads=threads, report=report)))
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the parent
        conn.send(("error", failure_reason(exc)))
    finally:
        conn.close()
