"""A Flower app on Flower's Deployment Engine: a SuperLink and N SuperNodes on loopback.

Usage (the app's ServerApp writes a JSON result file, with an ``error`` key when it failed)::

    with Federation(num_supernodes, workdir) as federation:
        result = federation.run(app_dir, {"key": "value"}, result_file="result.json", timeout=600)

``suite deploy fl --smoke --set method=secagg_sq`` runs the fl task this way (``cli/main.py``;
the fl app is ``tasks/fl/flower_app``).

Each process (``flower-superlink``, ``flower-supernode`` with ``--node-config
"partition-id=i num-partitions=N"``) runs insecure (no TLS) on 127.0.0.1 only, in a session of
its own, with ``FLWR_HOME`` inside the work directory, telemetry, update checks and runtime
dependency installation off (nothing leaves the machine). The run is submitted with ``flwr run
<app_dir>``; the SuperLink starts the ServerApp and every SuperNode its ClientApps as processes
of their own (Flower's default ``subprocess`` isolation), and the ServerApp writes its result
into the run's directory, named in the run config's ``result-dir``.

Starting processes by hand is Flower's documented way to deploy; this module only picks the
ports, waits for each process to be up, reports a dead one with its log's tail, and stops
them all (with every process they started) however the run ends. It knows no task: the app
folder, its run config and its result file's name are the caller's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Mapping
from typing import Any

_REPO_ROOT = Path(__file__).resolve().parents[1]
_HOST = "127.0.0.1"
_NODE_ID = re.compile(r"SuperNode ID: (\d+)")


class DeploymentError(RuntimeError):
    """A SuperLink or SuperNode would not start, died, or the run did not finish."""


def free_port(host: str = _HOST) -> int:
    """A TCP port nothing listens on now (the OS picks it; another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port_free(port: int, host: str = _HOST) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise DeploymentError(f"port {host}:{port} is taken ({exc.strerror}); pick another or pass none "
                                  "to let the OS choose a free one") from None


def _exe(name: str) -> str:
    """Flower's command ``name`` from this interpreter's environment (else from PATH)."""
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else name


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


class Federation:
    """A SuperLink and ``num_supernodes`` SuperNodes (partition ``i`` on node ``i``) on loopback.

    ``workdir`` holds ``flwr_home/`` (FLWR_HOME), ``logs/`` (one log per process) and each run's
    ``run-<k>/`` result. Use it as a context manager: leaving it stops every process, also on error.
    """

    def __init__(self, num_supernodes: int, workdir: Path, *, superlink_port: int | None = None,
                 startup_timeout: float = 180.0) -> None:
        if num_supernodes < 1:
            raise ValueError(f"num_supernodes must be >= 1, got {num_supernodes}")
        self.num_supernodes, self.workdir, self.startup_timeout = num_supernodes, Path(workdir), startup_timeout
        self.home, self.logs = self.workdir / "flwr_home", self.workdir / "logs"
        self.superlink_port = superlink_port
        self.node_ids: dict[int, int] = {}  # partition id -> SuperNode id
        self._procs: dict[str, subprocess.Popen] = {}
        self._seen: dict[int, Any] = {}  # pid -> psutil.Process of every descendant seen, to stop orphans too
        self._runs = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Federation:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> str:
        return f"{_HOST}:{self.superlink_port}"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        if self.superlink_port is None:
            self.superlink_port = free_port()
        else:
            check_port_free(self.superlink_port)
        self._spawn("superlink", ["flower-superlink", "--insecure", "--host", _HOST, "--port", str(self.superlink_port),
                                  "--disable-runtime-dependency-installation"])
        self._wait_listening("superlink", self.superlink_port)
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\naddress = "{self.address}"\ninsecure = true\n')
        for i in range(self.num_supernodes):
            port = free_port()
            self._spawn(f"supernode-{i}", [
                "flower-supernode", "--insecure", "--superlink", self.address, "--host", _HOST, "--port", str(port),
                "--node-config", f"partition-id={i} num-partitions={self.num_supernodes}"])
        for i in range(self.num_supernodes):
            self.node_ids[i] = self._wait_registered(i)

    def close(self) -> None:
        """Stop every process this federation started, and every process they started."""
        import psutil

        self._note_descendants()
        procs = list(self._seen.values())
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=5)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        for popen in self._procs.values():
            try:
                popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._procs.clear()
        self._seen.clear()

    def _note_descendants(self) -> None:
        """Remember every process below ours: one whose parent dies is re-parented out of our reach
        (Flower's own processes then stop when they notice, but only after a while)."""
        import psutil

        for popen in self._procs.values():
            try:
                root = psutil.Process(popen.pid)
                for proc in (root, *root.children(recursive=True)):
                    self._seen.setdefault(proc.pid, proc)
            except psutil.NoSuchProcess:
                pass

    # -- a run -------------------------------------------------------------------------------

    def run(self, app_dir: Path, run_config: Mapping[str, Any], *, result_file: str,
            timeout: float = 600.0) -> dict[str, Any]:
        """Run the Flower app in ``app_dir`` with ``run_config`` (plus ``result-dir``) to the end.

        Returns the JSON the ServerApp wrote to ``<result-dir>/<result_file>``, with ``run_id``,
        ``wall_s`` and ``result_dir`` (where the app may have left other files) added; a result
        whose ``error`` is set raises :class:`DeploymentError` with it and the processes' log tails.
        """
        self._runs += 1
        out = self.workdir / f"run-{self._runs}"
        shutil.rmtree(out, ignore_errors=True)  # a reused work directory must not hand back an old result
        override = self.workdir / f"run-{self._runs}.toml"
        values = {**run_config, "result-dir": str(out)}
        override.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
        started = time.monotonic()
        argv = [_exe("flwr"), "run", str(app_dir), "loopback", "--run-config", str(override), "--format", "json"]
        proc = subprocess.run(argv, env=self._env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        try:
            run_id = json.loads(proc.stdout)["run-id"]
        except (ValueError, KeyError, TypeError):
            raise DeploymentError(f"`flwr run` failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None
        if run_id is None:
            raise DeploymentError(f"`flwr run` did not start a run:\n{proc.stdout}\n{proc.stderr}")
        result = self._wait_result(out / result_file, int(run_id), started + timeout)
        if result.get("error"):
            raise DeploymentError(f"the ServerApp failed: {result['error']}\n{self._tails()}")
        return {**result, "run_id": int(run_id), "wall_s": time.monotonic() - started, "result_dir": str(out)}

    # -- helpers -----------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        bin_dir = str(Path(sys.executable).parent)  # Flower starts flower-superexec, flwr-serverapp... by name
        env.update({
            "FLWR_HOME": str(self.home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PATH": os.pathsep.join([bin_dir, env.get("PATH", "")]),
            "PYTHONPATH": os.pathsep.join(p for p in [str(_REPO_ROOT), env.get("PYTHONPATH", "")] if p),
            "NO_PROXY": _HOST, "no_proxy": _HOST,
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
        })
        return env

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        try:
            self._procs[name] = subprocess.Popen([_exe(argv[0]), *argv[1:]], env=self._env(),
                                                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                 start_new_session=True, cwd=self.workdir)
        finally:
            log.close()

    def _check_alive(self) -> None:
        self._note_descendants()
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise DeploymentError(f"{name} exited with status {proc.returncode}; the tail of "
                                      f"{self.logs / (name + '.log')}:\n{log_tail(self.logs / (name + '.log'))}")

    def _wait_listening(self, name: str, port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                if s.connect_ex((_HOST, port)) == 0:
                    return
            time.sleep(0.2)
        raise DeploymentError(f"{name} did not listen on {_HOST}:{port} within {self.startup_timeout:.0f} s:\n"
                              f"{log_tail(self.logs / (name + '.log'))}")

    def _wait_registered(self, i: int) -> int:
        log = self.logs / f"supernode-{i}.log"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            found = _NODE_ID.search(log.read_text(errors="replace")) if log.exists() else None
            if found:
                return int(found.group(1))
            time.sleep(0.2)
        raise DeploymentError(f"supernode-{i} did not register with the SuperLink within "
                              f"{self.startup_timeout:.0f} s:\n{log_tail(log)}")

    def _wait_result(self, result_file: Path, run_id: int, deadline: float) -> dict[str, Any]:
        next_status = time.monotonic() + 10
        while time.monotonic() < deadline:
            if result_file.exists():
                return json.loads(result_file.read_text())
            self._check_alive()
            if time.monotonic() >= next_status:  # a ServerApp that fails before writing its result
                status, details = self._run_status(run_id)
                if status.startswith("finished") and not result_file.exists():
                    raise DeploymentError(f"run {run_id} ended ({status}) without a result: {details}\n{self._tails()}")
                next_status = time.monotonic() + 10
            time.sleep(0.5)
        raise DeploymentError(f"run {run_id} did not finish within the timeout (no {result_file}); "
                              f"its status: {self._run_status(run_id)}\n{self._tails()}")

    def _run_status(self, run_id: int) -> tuple[str, str]:
        """The run's status and status details, as ``flwr ls`` reports them from the SuperLink."""
        argv = [_exe("flwr"), "ls", "loopback", "--run-id", str(run_id), "--format", "json"]
        proc = subprocess.run(argv, env=self._env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        try:
            run = json.loads(proc.stdout)["runs"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            return "unknown", f"`flwr ls` failed (exit {proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-500:]}"
        return str(run.get("status", "unknown")), str(run.get("status-details", ""))

    def _tails(self) -> str:
        return "\n".join(f"--- {name}.log\n{log_tail(self.logs / (name + '.log'), 25)}" for name in self._procs)
