"""Compressed secure federated learning on Flower: uplink bytes under SecAgg+ vs FedAvg fp32.

Reproduces at small scale "Reconciling Security and Communication Efficiency in Federated
Learning" (Prasad, Ghosh, Cormode, Mironov, Yousefpour, Stock, 2022): client updates are
compressed *under* secure aggregation (the server only sees the sum), on Flower's Simulation
Engine with Flower's own SecAgg+. Uplink bytes are counted on Flower's serialized replies.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from suite.config import TaskConfig
from suite.schema import Metric
from suite.task import RunContext, Task, register_task
from tasks.fl.claims import CLAIMS

_CODEC_KEYS = {  # the keys each method uses; the others are reset to null so equal runs hash equally
    "fedavg": (), "secagg": (),
    "secagg_sq": ("bits", "range", "field_bits"),
    "secagg_prune": ("bits", "range", "keep", "field_bits"),
    "secagg_pq": ("range", "pq_codewords", "pq_block", "field_bits"),
    "dp": (),
}
_DP_KEYS = ("epsilon", "delta", "noise_multiplier", "clip_norm")
_ALL_CODEC_KEYS = ("bits", "range", "keep", "pq_codewords", "pq_block", "field_bits")


class FLConfig(TaskConfig):
    method: Literal["fedavg", "secagg", "secagg_sq", "secagg_prune", "secagg_pq", "dp"] = "secagg_sq"  # see README
    dataset: Literal["digits", "femnist", "shakespeare"] = "digits"  # digits is offline; the others read data_dir
    data_dir: str | None = None  # flwr-datasets cache for femnist/shakespeare (default: the HF cache)
    num_clients: int = Field(20, ge=2)  # simulated clients (SuperNodes), one partition each
    clients_per_round: int = Field(10, ge=2)  # clients FedAvg samples per round
    alpha: float = Field(0.5, gt=0)  # Dirichlet concentration of the digits label split (lower: less IID)
    split_seed: int = Field(0, ge=0)  # train/test split and partition seed, independent of seed
    rounds: int = Field(30, ge=1)  # federated rounds
    local_epochs: int = Field(2, ge=1)  # client epochs per round
    batch_size: int = Field(16, ge=1)  # client SGD batch size
    lr: float = Field(0.1, gt=0)  # client SGD learning rate
    hidden: list[int] = Field(default_factory=lambda: [256, 128])  # digits MLP hidden widths
    bits: Literal[1, 2, 4, 8] | None = 8  # scalar-quantization bits per value (secagg_sq, secagg_prune)
    range: float | None = Field(0.01, gt=0)  # shared clipping range [-range, range] of update values
    keep: float | None = Field(0.15, gt=0, le=1)  # fraction of coordinates the shared mask keeps (secagg_prune)
    pq_codewords: int | None = Field(15, ge=3, le=255)  # codewords per tensor, odd: pairs +c, -c and 0 (secagg_pq)
    pq_block: int | None = Field(8, ge=1)  # values per product-quantization block (secagg_pq)
    field_bits: int | None = Field(None, ge=1, le=62)  # masked field width; null: the narrowest without overflow
    noise_multiplier: float | None = Field(None, ge=0)  # dp: Gaussian noise std / clip_norm; null: calibrated to epsilon
    clip_norm: float | None = Field(None, gt=0)  # dp: L2 bound of each client's update (Flower's server-side clipping)
    num_shares: float = Field(0.5, gt=0)  # SecAgg+ shares per client; <= 1: a fraction of the round's clients
    threshold: float = Field(0.6, gt=0)  # SecAgg+ reconstruction threshold; <= 1: a fraction of the shares
    dropout: float = Field(0.0, ge=0, lt=1)  # probability a client drops out after the key exchange
    ray_cpus: int = Field(2, ge=1)  # CPUs Ray may use
    client_cpus: float = Field(1.0, gt=0)  # CPUs per simulated client (Ray runs ray_cpus / client_cpus at once)
    client_gpus: float = Field(0.0, ge=0)  # GPU fraction per simulated client
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto picks cuda when available

    @model_validator(mode="before")
    @classmethod
    def _codec_keys_follow_method(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("method") in _CODEC_KEYS:
            used = _CODEC_KEYS[values["method"]]
            values = {**values, **{k: None for k in _ALL_CODEC_KEYS if k not in used}}
        if isinstance(values, dict) and values.get("method") != "dp":
            values = {**values, **{k: None for k in _DP_KEYS}}
        return values

    @model_validator(mode="after")
    def _consistent(self) -> FLConfig:
        from tasks.fl.codecs import check_field

        if self.clients_per_round > self.num_clients:
            raise ValueError(f"clients_per_round ({self.clients_per_round}) exceeds num_clients ({self.num_clients})")
        missing = [k for k in _CODEC_KEYS[self.method] if k != "field_bits" and getattr(self, k) is None]
        if missing:
            raise ValueError(f"method {self.method} needs {', '.join(missing)} (got null)")
        if self.method == "dp":
            if self.delta is None or self.clip_norm is None:
                raise ValueError("method dp needs delta and clip_norm (got null)")
            if (self.epsilon is None) == (self.noise_multiplier is None):
                raise ValueError("method dp needs either a target epsilon (the noise multiplier is calibrated to it) "
                                 f"or a noise_multiplier, not both nor neither (got epsilon={self.epsilon}, "
                                 f"noise_multiplier={self.noise_multiplier})")
        if self.method == "secagg_pq" and self.pq_codewords % 2 == 0:
            raise ValueError(f"pq_codewords must be odd (pairs of codewords +c, -c and the zero codeword), "
                             f"got {self.pq_codewords}")
        if self.field_bits is not None:
            largest = 1 if self.method == "secagg_pq" else 2**self.bits - 1
            check_field(largest, self.clients_per_round, self.field_bits)
        if self.num_shares > 1 and self.num_shares != int(self.num_shares):
            raise ValueError(f"num_shares is a fraction (<= 1) or a whole count, got {self.num_shares}")
        if self.threshold > 1 and self.threshold != int(self.threshold):
            raise ValueError(f"threshold is a fraction (<= 1) or a whole count, got {self.threshold}")
        return self


@register_task("fl")
class FLTask(Task):
    description = "compressed secure aggregation on Flower: uplink bytes and accuracy vs FedAvg fp32"
    version = "2"  # 2: per-tensor Secure Indexing codebooks with error feedback; the dp method
    Config = FLConfig
    # Imported once by a sweep's fork server, so that no cell pays for them again.
    preload = ("tasks.fl.train", "tasks.fl.apps", "tasks.fl.data", "flwr.simulation", "ray", "datasets",
               "flwr_datasets.partitioner", "sklearn.datasets", "sklearn.model_selection")
    pareto = (("bandwidth/uplink_bytes", "utility/accuracy"), ("bandwidth/compression", "utility/accuracy"))
    claims = CLAIMS  # the paper's claims, judged by `suite claims` (tasks/fl/claims.py)
    metrics = {
        "utility/accuracy": Metric("higher", "fraction", "test accuracy of the global model after the last round"),
        "utility/loss": Metric("lower", "nats", "test cross-entropy of the global model after the last round"),
        "bandwidth/uplink_bytes": Metric("lower", "bytes", "bytes one client sends per round (Flower-serialized replies, SecAgg+ included)"),
        "bandwidth/secagg_overhead_bytes": Metric("lower", "bytes", "of which SecAgg+ keys and shares, per client per round"),
        "bandwidth/compression": Metric("higher", "x", "fp32 FedAvg reply bytes of the same model / uplink_bytes"),
        "bandwidth/bits_per_parameter": Metric("lower", "bits", "uplink bits per model parameter per round"),
        "compute/params": Metric("lower", "count", "model parameters"),
        "privacy/epsilon": Metric("lower", "epsilon", "client-level epsilon (RDP accountant) for the run's noise, sampling rate and rounds"),
        "privacy/delta": Metric("none", "delta", "delta at which epsilon is reported"),
        "privacy/noise_multiplier": Metric("none", "sigma", "Gaussian noise std / clip_norm"),
        "privacy/sample_rate": Metric("none", "q", "clients_per_round / num_clients"),
        "privacy/steps": Metric("none", "steps", "rounds (noisy aggregations)"),
        "compute/slowdown": Metric("lower", "x", "train time / train time of fedavg, same seed and config"),
        "compute/startup_s": Metric("lower", "s", "Simulation Engine start (Ray, actors) until round 1 begins"),
    }

    def run(self, config: FLConfig, ctx: RunContext) -> dict[str, float]:
        from tasks.fl.train import run_federated

        return run_federated(config, ctx)

    def privacy_unit(self, config: FLConfig) -> str:
        return "client" if config.method == "dp" else "none"

    def accountant(self, config: FLConfig) -> str:
        return "rdp" if config.method == "dp" else "none"

    def reference(self, config: FLConfig) -> FLConfig | None:
        if config.method == "fedavg":
            return None
        return FLConfig(**{**config.model_dump(), "method": "fedavg"})
