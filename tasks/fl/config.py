"""The fl family's base config, the mixins its methods share, and the method registry.

Imported by the task (``tasks/fl/task.py``), by each method (``tasks/fl/methods/``) and by the
heavy modules alike. Every value that would pass here and then fail inside a run (Flower's
SecAgg+ rules, a field too narrow for the round's sum, a dp budget no noise can reach, a Ray pool
with no room for a client) is refused when the config is read, with the key, the rule and what
is allowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from suite.config import BaseConfig, DeviceChoice
from suite.method import Method, MethodRegistry

if TYPE_CHECKING:
    import numpy as np

# sklearn digits: 1,797 images, 25% held out; the Dirichlet split gives every client at least 5.
_DIGITS_TRAIN, _MIN_PARTITION = 1347, 5


class FLConfig(DeviceChoice, BaseConfig):
    """The keys every fl method reads."""

    dataset: Literal["digits", "femnist", "shakespeare"] = "digits"  # digits is offline; the others read data_dir
    data_dir: str | None = None  # flwr-datasets cache for femnist/shakespeare (default: the HF cache)
    num_clients: int = Field(20, ge=2)  # simulated clients (SuperNodes), one partition each
    clients_per_round: int = Field(10, ge=2)  # clients sampled per round (dp: the expected number, Poisson)
    alpha: float = Field(0.5, gt=0)  # Dirichlet concentration of the digits label split (lower: less IID)
    split_seed: int = Field(0, ge=0)  # train/test split and partition seed, independent of seed
    rounds: int = Field(30, ge=1)  # federated rounds
    local_epochs: int = Field(2, ge=1)  # client epochs per round
    batch_size: int = Field(16, ge=1)  # client SGD batch size
    lr: float = Field(0.1, gt=0)  # client SGD learning rate
    hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [256, 128])  # digits MLP hidden widths
    dropout: float = Field(0.0, ge=0, lt=1)  # probability a client drops out after the key exchange
    ray_cpus: int = Field(2, ge=1)  # CPUs Ray may use
    client_cpus: float = Field(1.0, gt=0)  # CPUs per simulated client (Ray runs ray_cpus / client_cpus at once)
    client_gpus: float = Field(0.0, ge=0)  # GPU fraction per simulated client

    @model_validator(mode="after")
    def _fits_the_data_and_the_machine(self) -> FLConfig:
        if self.clients_per_round > self.num_clients:
            raise ValueError(f"clients_per_round ({self.clients_per_round}) exceeds num_clients ({self.num_clients})")
        if self.client_cpus > self.ray_cpus:
            raise ValueError(f"client_cpus: each simulated client asks Ray for {self.client_cpus} CPUs but ray_cpus "
                             f"is {self.ray_cpus}, so no client could ever start; use client_cpus <= ray_cpus")
        if self.client_gpus > 0 and self.device == "cpu":
            raise ValueError(f"client_gpus: {self.client_gpus} GPUs per client with device cpu; use client_gpus 0 "
                             "or device auto/cuda")
        if self.dataset == "digits" and self.num_clients * _MIN_PARTITION > _DIGITS_TRAIN:
            raise ValueError(f"num_clients: digits has {_DIGITS_TRAIN} training images and every client needs at "
                             f"least {_MIN_PARTITION}, so at most {_DIGITS_TRAIN // _MIN_PARTITION} clients; "
                             f"got {self.num_clients}")
        return self

    def client_weight_cap(self) -> int:
        """The most one client can weigh in a round's aggregate (1: every client weighs 1)."""
        return 1


class Weighting(BaseModel):
    """Mixin of the methods that may weigh clients by their examples (all but dp)."""

    weighting: Literal["uniform", "examples"] = "uniform"  # FedAvg weights: 1 per client, or its examples (capped)
    max_weight: int | None = Field(None, ge=1, le=2**20)  # examples only: a client weighs min(examples, max_weight)

    @model_validator(mode="after")
    def _cap_with_examples_only(self) -> Weighting:
        if self.weighting == "examples" and self.max_weight is None:
            raise ValueError("max_weight: weighting examples needs a cap (a whole number >= 1), got null")
        if self.weighting == "uniform" and self.max_weight is not None:
            raise ValueError(f"max_weight: only with weighting examples (every client weighs 1 under uniform), "
                             f"got {self.max_weight}; leave it null")
        return self

    def client_weight_cap(self) -> int:
        return 1 if self.weighting == "uniform" else int(self.max_weight)


METHODS = MethodRegistry(FLConfig, package="tasks.fl.methods")


def method_of(config: FLConfig) -> FLMethod:
    """The method that runs ``config``."""
    return METHODS.get(config.method)()


class FLMethod(Method):
    """An fl method varies what the clients wrap their training in and how the server aggregates.

    The defaults are FedAvg's: no client mods, Flower's default fit round, the strategy as it is,
    clients sampled ``clients_per_round`` at a time, no codec, no noise.
    """

    def client_mods(self, config: Any) -> list[Any]:
        """The Flower mods around each client's training (the dropout mod goes inside them)."""
        return []

    def fit_workflow(self, config: Any, plan: Any, strategy: Any) -> Any:
        """The ServerApp's fit workflow (None: Flower's default fit round)."""
        return None

    def wrap_strategy(self, config: Any, strategy: Any, *, noise_multiplier: float | None) -> Any:
        """The strategy the server runs, around the seeded FedAvg ``strategy``."""
        return strategy

    def client_sampler(self, config: Any) -> str:
        """How the server samples a round's clients: ``fixed_size`` or ``poisson``."""
        return "fixed_size"

    def round_plan(self, config: Any, initial: list[np.ndarray]) -> Any:
        """The per-round codec plan (:class:`tasks.fl.rounds.RoundPlan`); None without a codec."""
        return None

    def noise_multiplier(self, config: Any) -> float | None:
        """The Gaussian noise multiplier of the aggregate; None without noise."""
        return None

    def privacy_metrics(self, config: Any, *, noise_multiplier: float | None) -> dict[str, float]:
        """The run's privacy metrics from the noise it ran with (none without noise)."""
        return {}

    def reference(self, config: Any) -> BaseConfig | None:
        """FedAvg fp32 with the same shared keys: what the slowdown is measured against."""
        return METHODS.convert(config, "fedavg")
