"""The fl task's side of a Deployment Engine run (the harness is ``runners/flower_deploy.py``).

The harness knows no task: it runs the Flower app in :data:`APP_DIR` with the run config
:func:`deploy_run_config` gives, and hands back the ``result.json`` the ServerApp wrote
(:mod:`tasks.fl.deploy_app`). :func:`run_deployed` adds the arrays the ServerApp saved, and
:func:`deployed_metrics` turns a result into the task's metrics, as a Simulation Engine run
reports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from tasks.fl.config import FLConfig

APP_DIR = Path(__file__).resolve().parent / "flower_app"
RESULT_FILE, ARRAYS_FILE = "result.json", "arrays.npz"  # what tasks.fl.deploy_app's ServerApp writes


class Deployment(Protocol):
    """What :func:`run_deployed` needs of a federation (``runners.flower_deploy.Federation``)."""

    num_supernodes: int

    def run(self, app_dir: Path, run_config: dict[str, Any], *, result_file: str, timeout: float) -> dict[str, Any]: ...


def deploy_run_config(config: FLConfig) -> dict[str, Any]:
    """The app's run config that resolves to ``config`` in the ServerApp and every ClientApp."""
    return {"tier": "quick", "smoke": False, "overrides": config.model_dump_json()}


def run_deployed(federation: Deployment, config: FLConfig, *, timeout: float) -> dict[str, Any]:
    """Run ``config`` on ``federation`` (one SuperNode per client) to the end.

    Returns the ServerApp's ``result.json`` with ``arrays`` (``arrays.npz``: initial and final
    global weights, the last unmasked sum and its survivors) added.
    """
    import numpy as np

    if config.num_clients != federation.num_supernodes:
        raise ValueError(f"num_clients={config.num_clients} but the federation has {federation.num_supernodes} "
                         "SuperNodes (one client each)")
    result = federation.run(APP_DIR, deploy_run_config(config), result_file=RESULT_FILE, timeout=timeout)
    with np.load(Path(result["result_dir"]) / ARRAYS_FILE) as arrays:
        result["arrays"] = {k: arrays[k] for k in arrays.files}
    return result


def deployed_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The fl task's metrics (as :func:`tasks.fl.train.run_federated` reports them) from a deployed run."""
    from tasks.fl.meter import uplink_summary

    rounds = result["config"]["rounds"]
    if str(rounds) not in result["accuracy"] or not any(b["payload"] for b in result["bytes"]):
        raise RuntimeError(f"the deployed run ended without evaluating round {rounds} or without a completed client")
    bandwidth = uplink_summary(result["bytes"], rounds)
    uplink = bandwidth["bandwidth/uplink_bytes"]
    return {
        **bandwidth,
        "utility/accuracy": result["accuracy"][str(rounds)],
        "utility/loss": result["loss"][str(rounds)],
        "bandwidth/compression": result["fp32_reply_bytes"] / uplink,
        "bandwidth/bits_per_parameter": uplink * 8 / result["dim"],
        "compute/params": float(result["dim"]),
        "compute/model_bytes": float(result["model_bytes"]),
    }
