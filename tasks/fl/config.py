"""The fl task's config: one pydantic model, every key validated when the config is read.

Keys a method does not read are reset to null, so that two configs that run the same way hash
the same. Every value that would pass here and then fail inside a run (Flower's SecAgg+ rules,
a field too narrow for the round's sum, a dp budget no noise can reach, a Ray pool with no room
for a client) is refused here, with the key, the rule and what is allowed.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from suite.config import TaskConfig

_SECAGG = ("num_shares", "threshold")
_METHOD_KEYS = {  # the keys each method reads besides the shared ones
    "fedavg": (),
    "secagg": _SECAGG,
    "secagg_sq": ("bits", "range", "field_bits", *_SECAGG),
    "secagg_prune": ("bits", "range", "keep", "field_bits", *_SECAGG),
    "secagg_pq": ("range", "pq_codewords", "pq_block", "field_bits", *_SECAGG),
    "dp": ("epsilon", "delta", "noise_multiplier", "clip_norm"),
}
METHOD_KEYS = {m: frozenset(keys) for m, keys in _METHOD_KEYS.items()}
_OPTIONAL_KEYS = sorted({k for keys in _METHOD_KEYS.values() for k in keys})
# Opacus' noise calibration gives up beyond this noise multiplier (opacus.accountants.utils.MAX_SIGMA).
_MAX_SIGMA = 1e6
# sklearn digits: 1,797 images, 25% held out; the Dirichlet split gives every client at least 5.
_DIGITS_TRAIN, _MIN_PARTITION = 1347, 5


class FLConfig(TaskConfig):
    model_config = ConfigDict(allow_inf_nan=False)  # an infinite rate, range or budget is never meant

    method: Literal["fedavg", "secagg", "secagg_sq", "secagg_prune", "secagg_pq", "dp"] = "secagg_sq"  # see README
    dataset: Literal["digits", "femnist", "shakespeare"] = "digits"  # digits is offline; the others read data_dir
    data_dir: str | None = None  # flwr-datasets cache for femnist/shakespeare (default: the HF cache)
    num_clients: int = Field(20, ge=2)  # simulated clients (SuperNodes), one partition each
    clients_per_round: int = Field(10, ge=2)  # clients sampled per round (dp: the expected number, Poisson)
    weighting: Literal["uniform", "examples"] = "uniform"  # FedAvg weights: 1 per client, or its examples (capped)
    max_weight: int | None = Field(256, ge=1, le=2**20)  # examples: a client weighs min(examples, max_weight)
    alpha: float = Field(0.5, gt=0)  # Dirichlet concentration of the digits label split (lower: less IID)
    split_seed: int = Field(0, ge=0)  # train/test split and partition seed, independent of seed
    rounds: int = Field(30, ge=1)  # federated rounds
    local_epochs: int = Field(2, ge=1)  # client epochs per round
    batch_size: int = Field(16, ge=1)  # client SGD batch size
    lr: float = Field(0.1, gt=0)  # client SGD learning rate
    hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [256, 128])  # digits MLP hidden widths
    bits: Literal[1, 2, 4, 8] | None = 8  # scalar-quantization bits per value (secagg_sq, secagg_prune)
    range: float | None = Field(0.01, gt=0)  # shared clipping range [-range, range] of update values
    keep: float | None = Field(0.15, gt=0, le=1)  # fraction of coordinates the shared mask keeps (secagg_prune)
    pq_codewords: int | None = Field(15, ge=3, le=255)  # codewords per tensor, odd: pairs +c, -c and 0 (secagg_pq)
    pq_block: int | None = Field(8, ge=1)  # values per product-quantization block (secagg_pq)
    field_bits: int | None = Field(None, ge=1, le=62)  # masked field width; null: the narrowest without overflow
    noise_multiplier: float | None = Field(None, gt=0)  # dp: Gaussian noise std / sensitivity; null: calibrated to epsilon
    clip_norm: float | None = Field(None, gt=0)  # dp: L2 bound of each client's update (Flower's server-side clipping)
    num_shares: float | None = Field(0.5, gt=0)  # SecAgg+ shares per client; <= 1: a fraction of the round's clients
    threshold: float | None = Field(0.6, gt=0)  # SecAgg+ reconstruction threshold; <= 1: a fraction of the shares
    dropout: float = Field(0.0, ge=0, lt=1)  # probability a client drops out after the key exchange
    ray_cpus: int = Field(2, ge=1)  # CPUs Ray may use
    client_cpus: float = Field(1.0, gt=0)  # CPUs per simulated client (Ray runs ray_cpus / client_cpus at once)
    client_gpus: float = Field(0.0, ge=0)  # GPU fraction per simulated client
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto picks cuda when available

    @model_validator(mode="before")
    @classmethod
    def _unused_keys_are_null(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("method") in _METHOD_KEYS:
            used = METHOD_KEYS[values["method"]]
            values = {**values, **{k: None for k in _OPTIONAL_KEYS if k not in used}}
        if isinstance(values, dict) and values.get("weighting", "uniform") == "uniform":
            values = {**values, "max_weight": None}
        return values

    @model_validator(mode="after")
    def _consistent(self) -> FLConfig:
        if self.clients_per_round > self.num_clients:
            raise ValueError(f"clients_per_round ({self.clients_per_round}) exceeds num_clients ({self.num_clients})")
        missing = [k for k in METHOD_KEYS[self.method] - {"field_bits", "epsilon", "noise_multiplier"}
                   if getattr(self, k) is None]
        if self.weighting == "examples" and self.max_weight is None:
            missing.append("max_weight")
        if missing:
            raise ValueError(f"method {self.method} needs {', '.join(sorted(missing))} (got null)")
        _check_resources(self)
        if self.dataset == "digits" and self.num_clients * _MIN_PARTITION > _DIGITS_TRAIN:
            raise ValueError(f"num_clients: digits has {_DIGITS_TRAIN} training images and every client needs at least "
                             f"{_MIN_PARTITION}, so at most {_DIGITS_TRAIN // _MIN_PARTITION} clients; got {self.num_clients}")
        if self.method == "dp":
            _check_dp(self)
        if self.method == "secagg":
            from tasks.fl.rules import check_flower_field

            check_flower_field(self.clients_per_round)
        if self.method.startswith("secagg"):
            from tasks.fl.rules import check_secagg

            check_secagg(self.num_shares, self.threshold, self.clients_per_round)
        if self.method.startswith("secagg_"):
            _check_codec(self)
        return self

    def client_weight_cap(self) -> int:
        """The most one client can weigh in a round's aggregate (1 under uniform weighting)."""
        return 1 if self.weighting == "uniform" else int(self.max_weight)


def _check_resources(config: FLConfig) -> None:
    if config.client_cpus > config.ray_cpus:
        raise ValueError(f"client_cpus: each simulated client asks Ray for {config.client_cpus} CPUs but ray_cpus is "
                         f"{config.ray_cpus}, so no client could ever start; use client_cpus <= ray_cpus")
    if config.client_gpus > 0 and config.device == "cpu":
        raise ValueError(f"client_gpus: {config.client_gpus} GPUs per client with device cpu; use client_gpus 0 "
                         "or device auto/cuda")


def _check_dp(config: FLConfig) -> None:
    if config.weighting != "uniform":
        raise ValueError(f"weighting: method dp supports only uniform (one client's sensitivity, clip_norm / "
                         f"clients_per_round, assumes every client weighs 1), got {config.weighting}")
    if (config.epsilon is None) == (config.noise_multiplier is None):
        raise ValueError("method dp needs either a target epsilon (the noise multiplier is calibrated to it) "
                         f"or a noise_multiplier, not both nor neither (got epsilon={config.epsilon}, "
                         f"noise_multiplier={config.noise_multiplier})")
    if config.epsilon is not None:
        rate = config.clients_per_round / config.num_clients
        floor = _rdp_floor(rate, config.rounds, config.delta)
        if not math.isfinite(config.epsilon) or config.epsilon <= floor:
            raise ValueError(f"epsilon: {config.epsilon} is below what noise multiplier {_MAX_SIGMA:g} (the "
                             f"calibration's limit) reaches in {config.rounds} rounds at sample rate {rate:g} "
                             f"(epsilon {floor:.3g}); use a larger epsilon or a noise_multiplier")


def _rdp_floor(rate: float, rounds: int, delta: float) -> float:
    """The least epsilon Opacus' RDP calibration reaches: its epsilon at the largest noise it tries.

    Computed on Opacus' whole-number orders only (the fractional ones cost seconds at this
    noise and never give the minimum there, which is the largest order's).
    """
    import warnings

    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    orders = [a for a in RDPAccountant.DEFAULT_ALPHAS if float(a).is_integer()]
    rdp = compute_rdp(q=rate, noise_multiplier=_MAX_SIGMA, steps=rounds, orders=orders)
    with warnings.catch_warnings():  # "optimal order is the largest": expected at this noise
        warnings.simplefilter("ignore", UserWarning)
        return float(get_privacy_spent(orders=orders, rdp=rdp, delta=delta)[0])


def _check_codec(config: FLConfig) -> None:
    from tasks.fl.codecs import check_field, field_bits

    if config.method == "secagg_pq" and config.pq_codewords % 2 == 0:
        raise ValueError(f"pq_codewords must be odd (pairs of codewords +c, -c and the zero codeword), "
                         f"got {config.pq_codewords}")
    largest = (1 if config.method == "secagg_pq" else 2**config.bits - 1) * config.client_weight_cap()
    if config.field_bits is not None:
        check_field(largest, config.clients_per_round, config.field_bits)
    elif field_bits(largest, config.clients_per_round) > 62:
        raise ValueError(f"field_bits: a round's sum ({config.clients_per_round} clients x {largest}) needs more than "
                         "62 bits; lower max_weight, bits or clients_per_round")
