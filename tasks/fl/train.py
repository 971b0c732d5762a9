"""One federated run on Flower's Simulation Engine: data, apps, one simulation, metrics."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

from suite.context import RunContext
from suite.device import resolve_device
from suite.examples import digest
from tasks.fl.config import FLConfig, method_of


def fp32_reply_bytes(weights: list[np.ndarray], num_examples: int = 100) -> int:
    """Serialized size of a FedAvg fit reply carrying ``weights`` in fp32 (Flower's wire format)."""
    from flwr.app import Message, RecordDict
    from flwr.app.message_type import MessageType
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
    from flwr.common.serde import message_to_proto
    from flwr.compat.common.recorddict_compat import fitres_to_recorddict

    incoming = Message(content=RecordDict(), dst_node_id=2**62, message_type=MessageType.TRAIN, group_id="1")
    incoming.metadata.__dict__["_message_id"] = incoming.object_id if hasattr(incoming, "object_id") else "x" * 64
    res = FitRes(Status(Code.OK, "Success"), ndarrays_to_parameters([w.astype(np.float32) for w in weights]), num_examples, {})
    return message_to_proto(Message(fitres_to_recorddict(res, True), reply_to=incoming)).ByteSize()


def run_federated(config: FLConfig, ctx: RunContext) -> dict[str, float]:
    """One run of ``config`` on Flower's Simulation Engine: its metrics (utility, uplink bytes, privacy)."""
    import torch
    from flwr.simulation import run_simulation

    from tasks.fl.apps import ClientSpec, build_model, client_app, evaluate, get_weights, set_weights
    from tasks.fl.data import load
    from tasks.fl.engine import SharedPartitions, prompt_engine, ray_session
    from tasks.fl.meter import uplink_summary
    from tasks.fl.rounds import flatten
    from tasks.fl.server import ServerRecord, ServerSpec, server_app

    for name in ("flwr", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _quiet_known_notices()
    torch.manual_seed(config.seed)
    device = str(resolve_device(config.device))
    method = method_of(config)
    with ctx.phase("setup"):
        partitions, (x_test, y_test) = load(config.dataset, config.num_clients, config.alpha, config.split_seed, config.data_dir)
        model = build_model(config.dataset, tuple(config.hidden)).to(device)
        initial = get_weights(model)
    dim = int(flatten(initial).size)
    plan = method.round_plan(config, initial)

    def evaluate_fn(weights: list[np.ndarray]) -> tuple[float, float]:
        set_weights(model, weights)
        return evaluate(model, x_test, y_test, device)

    def on_round(rnd: int) -> None:
        ctx.progress(f"round {rnd}", rnd - 1, config.rounds)

    record = ServerRecord()
    sigma = method.noise_multiplier(config)
    server = server_app(ServerSpec(config, initial, evaluate_fn, plan=plan, noise_multiplier=sigma, on_round=on_round),
                        record)
    init_args = _ray_init_args(config.ray_cpus)
    backend = {"client_resources": {"num_cpus": config.client_cpus, "num_gpus": config.client_gpus},
               "init_args": init_args}
    started = time.perf_counter()
    with ctx.phase("train"), ray_session(init_args), prompt_engine():
        spec = ClientSpec(config.dataset, tuple(config.hidden), SharedPartitions(partitions), config.local_epochs,
                          config.batch_size, config.lr, config.seed, device, weight_cap=config.client_weight_cap())
        try:
            run_simulation(server_app=server, client_app=client_app(spec, method.client_mods(config), config.dropout),
                           num_supernodes=config.num_clients, backend_config=backend)
        except BaseException:
            if record.error is not None:
                raise record.error from None
            raise
    if record.error is not None:
        raise record.error
    missing = [r for r in range(1, config.rounds + 1) if r not in record.accuracy]
    if missing or record.meter is None:
        raise RuntimeError(f"the simulation ended without evaluating rounds {missing}")
    # The server's last evaluation (the final round) left the global model in ``model``.
    ctx.record_predictions("utility/accuracy", predicted=_predictions(model, x_test, device),
                           target=y_test.tolist(), examples=digest(x_test, y_test))

    for rnd in range(1, config.rounds + 1):
        entries = record.meter.round_entries(rnd)
        step = {"utility/accuracy": record.accuracy[rnd], "utility/loss": record.loss[rnd]}
        if any(e["payload"] for e in entries):  # a dp round may sample nobody
            step["bandwidth/uplink_bytes"] = uplink_summary(entries, 1)["bandwidth/uplink_bytes"]
        ctx.log_step(rnd, step)
    bandwidth = uplink_summary(record.meter.bytes.values(), config.rounds)
    uplink = bandwidth["bandwidth/uplink_bytes"]
    privacy = method.privacy_metrics(config, noise_multiplier=sigma)
    return {
        **privacy,
        **bandwidth,
        "utility/accuracy": record.accuracy[config.rounds],
        "utility/loss": record.loss[config.rounds],
        "bandwidth/compression": fp32_reply_bytes(initial) / uplink,
        "bandwidth/bits_per_parameter": uplink * 8 / dim,
        "compute/params": float(dim),
        "compute/model_bytes": float(sum(a.nbytes for a in initial)),
        "compute/startup_s": _startup_seconds(started, record.evaluated_at),
    }


def _predictions(model: Any, x: np.ndarray, device: str) -> list[int]:
    """The model's predicted class of each test example (for paired comparisons of runs)."""
    import torch

    model.eval()
    with torch.no_grad():
        return [int(p) for i in range(0, len(x), 1024)
                for p in model(torch.from_numpy(x[i:i + 1024]).to(device)).argmax(1).tolist()]


def _ray_init_args(cpus: int) -> dict[str, Any]:
    """A Ray instance of the run's own, unless RAY_ADDRESS names a cluster to join.

    Left to itself, ``ray.init()`` joins any cluster a ``ray start`` left running on the machine
    (another job's), and then refuses ``num_cpus``; a run must not share resources unawares.
    """
    address = os.environ.get("RAY_ADDRESS")
    args: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address:
        return {**args, "address": address}
    return {**args, "address": "local", "num_cpus": cpus, "include_dashboard": False}  # the dashboard: ~1 s of start


# Notices every run would print, about what this task does on purpose: the Simulation Engine's
# ``run_simulation`` (deprecated in favour of ``flwr run``, which this task cannot time per run),
# metrics the clients do not send, and Ray's note on a future default for CPU-only tasks.
# And the dp wrapper's warning that a round's count differs from the expected clients_per_round,
# which Poisson sampling does on purpose (the mean's denominator stays fixed; tasks.fl.strategy).
_KNOWN_NOTICES = ("DEPRECATED FEATURE: The `run_simulation`", "No fit_metrics_aggregation_fn provided",
                  "No evaluate_metrics_aggregation_fn provided", "The number of clients returning parameters")


class _DropKnownNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().lstrip().startswith(_KNOWN_NOTICES)


def _quiet_known_notices() -> None:
    import warnings

    for name in ("flwr", ""):  # Flower's logger, and the root logger its records also reach
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownNotices) for f in logger.filters):
            logger.addFilter(_DropKnownNotices())
    warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)


def _startup_seconds(started: float, evaluated_at: dict[int, float]) -> float:
    """What starting the Simulation Engine (Ray, its actors, the apps) cost this run.

    Ray starts while round 1 waits for its first replies, so the cost is the time to the end of
    round 1 less a typical round (the median of the later rounds' durations).
    """
    rounds = sorted(r for r in evaluated_at if r >= 1)
    later = [evaluated_at[r] - evaluated_at[r - 1] for r in rounds[1:] if r - 1 in evaluated_at]
    return evaluated_at[rounds[0]] - started - (float(np.median(later)) if later else 0.0)
