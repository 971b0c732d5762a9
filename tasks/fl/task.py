"""Compressed secure federated learning on Flower: uplink bytes under SecAgg+ vs FedAvg fp32.

Reproduces at small scale "Reconciling Security and Communication Efficiency in Federated
Learning" (Prasad, Ghosh, Cormode, Mironov, Yousefpour, Stock, 2022): client updates are
compressed *under* secure aggregation (the server only sees the sum), on Flower's Simulation
Engine with Flower's own SecAgg+. Uplink bytes are counted on Flower's serialized replies.
"""

from __future__ import annotations

from suite.schema import Metric
from suite.task import RunContext, Task, register_task
from tasks.fl.claims import CLAIMS
from tasks.fl.config import METHODS, FLConfig

__all__ = ["FLConfig", "FLTask"]


@register_task("fl")
class FLTask(Task):
    description = "compressed secure aggregation on Flower: uplink bytes and accuracy vs FedAvg fp32"
    # 4: each method's config holds only its own keys (hashes changed, results did not).
    version = "4"
    Config = FLConfig
    method_registry = METHODS  # tasks/fl/methods/: each method's config, client mods, workflow and strategy
    # Imported once by a sweep's fork server, so that no cell pays for them again.
    preload = ("tasks.fl.train", "tasks.fl.apps", "tasks.fl.server", "tasks.fl.secure", "tasks.fl.data",
               "flwr.simulation", "ray", "datasets", "flwr_datasets.partitioner", "sklearn.datasets",
               "sklearn.model_selection")
    pareto = (("bandwidth/uplink_bytes", "utility/accuracy"), ("bandwidth/compression", "utility/accuracy"))
    claims = CLAIMS  # the paper's claims, judged by `suite claims` (tasks/fl/claims.py)
    metrics = {
        "utility/accuracy": Metric("higher", "fraction", "test accuracy of the global model after the last round"),
        "utility/loss": Metric("lower", "nats", "test cross-entropy of the global model after the last round"),
        "bandwidth/uplink_bytes": Metric("lower", "bytes", "bytes one client sends per round (Flower-serialized replies, SecAgg+ included), over the clients whose update was aggregated"),
        "bandwidth/secagg_overhead_bytes": Metric("lower", "bytes", "of which SecAgg+ keys and shares, per client per round"),
        "bandwidth/dropped_bytes": Metric("lower", "bytes", "bytes per round sent by clients that dropped out before their update was aggregated (not in uplink_bytes)"),
        "bandwidth/compression": Metric("higher", "x", "fp32 FedAvg reply bytes of the same model / uplink_bytes"),
        "bandwidth/bits_per_parameter": Metric("lower", "bits", "uplink bits per model parameter per round"),
        "compute/params": Metric("lower", "count", "model parameters"),
        "compute/model_bytes": Metric("lower", "bytes", "weight bytes of the global model (fp32)"),
        "privacy/epsilon": Metric("lower", "epsilon", "client-level epsilon (RDP accountant) for the run's noise, sampling rate and rounds"),
        "privacy/epsilon_rdp": Metric("lower", "epsilon", "client-level epsilon, RDP accountant (Opacus), Poisson sampling"),
        "privacy/epsilon_prv": Metric("lower", "epsilon", "client-level epsilon, PRV accountant (Opacus), Poisson sampling"),
        "privacy/epsilon_pld": Metric("lower", "epsilon", "client-level epsilon, PLD accountant (dp-accounting), Poisson sampling"),
        "privacy/delta": Metric("none", "delta", "delta at which epsilon is reported"),
        "privacy/noise_multiplier": Metric("none", "sigma", "Gaussian noise std / clip_norm"),
        "privacy/sample_rate": Metric("none", "q", "probability a client is sampled in a round (Poisson): clients_per_round / num_clients"),
        "privacy/steps": Metric("none", "steps", "rounds (noisy aggregations)"),
        "compute/slowdown": Metric("lower", "x", "train time / train time of fedavg, same seed and config"),
        "compute/startup_s": Metric("lower", "s", "Simulation Engine start (Ray, actors) until round 1 begins"),
    }

    def run(self, config: FLConfig, ctx: RunContext) -> dict[str, float]:
        from tasks.fl.train import run_federated

        return run_federated(config, ctx)

    def ray_cpus(self, config: FLConfig) -> int:
        """CPUs the run's Ray head needs: the Simulation Engine's pool (``ray_cpus``)."""
        return config.ray_cpus
