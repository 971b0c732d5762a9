"""The ``fl`` apps as Flower app components, for the Deployment Engine (SuperLink + SuperNodes).

``flwr run tasks/fl/flower_app <connection>`` ships ``tasks/fl/flower_app/pyproject.toml``,
whose components are :data:`serverapp` and :data:`clientapp` below. Both resolve the run's
config (its method's :class:`~tasks.fl.config.FLConfig` subclass) from the run config, exactly
as ``suite run fl`` would:

* ``tier`` (``quick``/``full``), ``smoke`` (apply the tier's smoke keys) and ``overrides``
  (a JSON object of config keys, e.g. ``{"method": "secagg_pq", "bits": 4}``);
* ``result-dir``: where the ServerApp writes ``result.json`` and ``arrays.npz`` ("" for none).

Each SuperNode is one client: its partition is the node config's ``partition-id`` (of
``num-partitions``, which must equal the config's ``num_clients``). The apps themselves are
the ones the Simulation Engine runs (:func:`tasks.fl.apps.server_app`, :func:`tasks.fl.apps.client_app`),
built per run because a Flower app component is a module-level object while the config
arrives with the run.

The processes that load this module (``flwr-serverapp``, ``flwr-clientapp``) must be able to
import ``tasks`` (this project installed, or on ``PYTHONPATH``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from suite.device import resolve_device
from tasks.fl.config import FLConfig, method_of
from tasks.fl.deployed import ARRAYS_FILE, RESULT_FILE


@lru_cache(maxsize=4)
def _resolve(tier: str, smoke: bool, overrides: str) -> FLConfig:
    from tasks.fl.task import FLTask

    try:
        values = json.loads(overrides) if overrides.strip() else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"run config 'overrides' must be a JSON object of fl config keys: {exc}") from None
    if not isinstance(values, dict):
        raise ValueError(f"run config 'overrides' must be a JSON object, got {type(values).__name__}")
    smoke_keys = FLTask.tier(tier).smoke if smoke else {}
    return FLTask.resolve(tier, {**smoke_keys, **values})


def run_config(context: Context) -> FLConfig:
    """The run's validated config, from the run config's ``tier``, ``smoke`` and ``overrides``."""
    cfg = context.run_config
    return _resolve(str(cfg.get("tier", "quick")), bool(cfg.get("smoke", False)), str(cfg.get("overrides", "")))


def _device(config: FLConfig) -> str:
    return str(resolve_device(config.device))


# -- client -------------------------------------------------------------------------------------


def _partition(context: Context, num_clients: int) -> int:
    node = context.node_config
    if "partition-id" not in node:
        raise ValueError("the SuperNode has no 'partition-id' in its node config; start it with "
                         f"--node-config 'partition-id=<0..{num_clients - 1}> num-partitions={num_clients}'")
    partition, partitions = int(node["partition-id"]), int(node.get("num-partitions", num_clients))
    if partitions != num_clients or not 0 <= partition < num_clients:
        raise ValueError(f"node config partition-id={partition} num-partitions={partitions} does not fit the run's "
                         f"num_clients={num_clients}: use num-partitions={num_clients} and partition-id 0..{num_clients - 1}")
    return partition


class _RunClientApp(ClientApp):
    """A ClientApp that builds the run's :func:`~tasks.fl.apps.client_app` from the message's context."""

    def __call__(self, message: Message, context: Context) -> Message:
        config = run_config(context)
        _partition(context, config.num_clients)  # fail early, before any SecAgg+ stage, on a wrong node config
        return _client_app(config.model_dump_json())(message, context)


@lru_cache(maxsize=2)
def _client_app(config_json: str) -> ClientApp:
    import torch

    from tasks.fl.apps import ClientSpec, client_app
    from tasks.fl.data import load
    from tasks.fl.task import FLTask

    config = FLTask.parse(json.loads(config_json))
    torch.set_num_threads(1)
    partitions = _LazyPartitions(lambda: load(config.dataset, config.num_clients, config.alpha, config.split_seed,
                                              config.data_dir)[0])
    spec = ClientSpec(config.dataset, tuple(config.hidden), partitions, config.local_epochs, config.batch_size,
                      config.lr, config.seed, _device(config), weight_cap=config.client_weight_cap())
    return client_app(spec, method_of(config).client_mods(config), config.dropout)


class _LazyPartitions(Sequence):
    """The clients' partitions, loaded on first use.

    Every message a SuperNode receives starts a fresh ClientApp process; SecAgg+ sends four per
    round and only the masked-vector stage trains, so the other three skip loading the data.
    """

    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self._parts: list | None = None

    def _all(self) -> list:
        if self._parts is None:
            self._parts = self._loader()
        return self._parts

    def __getitem__(self, i: Any) -> Any:
        return self._all()[i]

    def __len__(self) -> int:
        return len(self._all())


clientapp = _RunClientApp()


# -- server -------------------------------------------------------------------------------------

serverapp = ServerApp()


@serverapp.main()
def _server_main(grid: Grid, context: Context) -> None:
    from tasks.fl.server import ServerRecord

    config = run_config(context)
    out = str(context.run_config.get("result-dir", ""))
    record, weights = ServerRecord(), {}
    try:
        _serve(grid, context, config, record, weights)
    except BaseException as exc:
        record.error = record.error or exc
        raise
    finally:
        if out:
            _write_result(Path(out), config, record, weights)


def _serve(grid: Grid, context: Context, config: FLConfig, record: Any, weights: dict) -> None:
    """Flower's FedAvg + the method's workflow (:func:`tasks.fl.apps.server_app`) over ``grid``."""
    import numpy as np
    import torch

    from tasks.fl.apps import build_model, evaluate, get_weights, set_weights
    from tasks.fl.data import load
    from tasks.fl.server import ServerSpec, server_app

    torch.set_num_threads(1)
    torch.manual_seed(config.seed)  # the same initial model as the Simulation Engine's run of this config
    device = _device(config)
    _, (x_test, y_test) = load(config.dataset, config.num_clients, config.alpha, config.split_seed, config.data_dir)
    model = build_model(config.dataset, tuple(config.hidden)).to(device)
    weights["initial"] = initial = get_weights(model)

    def evaluate_fn(new: list[np.ndarray]) -> tuple[float, float]:
        weights["final"] = [np.asarray(w).copy() for w in new]
        set_weights(model, new)
        return evaluate(model, x_test, y_test, device)

    method = method_of(config)
    spec = ServerSpec(config, initial, evaluate_fn, plan=method.round_plan(config, initial),
                      noise_multiplier=method.noise_multiplier(config))
    server_app(spec, record)(grid, context)


def _write_result(out: Path, config: Any, record: Any, weights: dict) -> None:
    """``result.json`` (per-round accuracy and loss, the byte meter, any error) and ``arrays.npz``
    (initial and last-evaluated global weights; the last unmasked integer sum and its survivors)."""
    import numpy as np

    from suite.cache import atomic_write
    from tasks.fl.rounds import flatten
    from tasks.fl.train import fp32_reply_bytes

    out.mkdir(parents=True, exist_ok=True)
    workflow = record.workflow
    last_sum = getattr(workflow, "last_sum", None)
    initial = weights.get("initial", [])
    final = weights.get("final", initial)
    with atomic_write(out / ARRAYS_FILE) as fh:
        np.savez(fh, initial=flatten(initial) if initial else np.zeros(0, np.float32),
                 final=flatten(final) if final else np.zeros(0, np.float32),
                 last_sum=np.asarray([] if last_sum is None else last_sum, dtype=np.int64),
                 last_survivors=np.asarray(sorted(getattr(workflow, "last_survivors", set())), dtype=np.uint64))
    result = {
        "config": config.model_dump(mode="json"),
        "accuracy": {str(r): a for r, a in record.accuracy.items()},
        "loss": {str(r): v for r, v in record.loss.items()},
        "bytes": [{"round": r, "node": n, **kinds} for (r, n), kinds in (record.meter.bytes.items() if record.meter else [])],
        "fp32_reply_bytes": fp32_reply_bytes(initial) if initial else None,
        "model_bytes": int(sum(a.nbytes for a in initial)) if initial else None,
        "samples": {str(r): p for r, p in (record.strategy.samples.items() if record.strategy else [])},
        "dim": int(flatten(initial).size) if initial else None,
        "error": None if record.error is None else f"{type(record.error).__name__}: {record.error}",
        "pid": os.getpid(),
    }
    with atomic_write(out / RESULT_FILE, "w") as fh:
        json.dump(result, fh, indent=1)
