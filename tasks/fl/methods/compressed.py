"""secagg_sq, secagg_prune, secagg_pq: a codec under SecAgg+ (:mod:`tasks.fl.secure`).

The three share their pipeline: the client mod encodes the update with the round's codec and
masks it in the narrowest field that holds the round's sum; the server workflow unmasks the
survivors' sum and decodes the mean. What varies is the codec (``codec_kind``), its keys and
the largest integer one client adds to a coordinate.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from tasks.fl.config import METHODS, FLConfig, FLMethod, Weighting
from tasks.fl.methods.secagg import SecAggKeys

if TYPE_CHECKING:
    import numpy as np


class CompressedConfig(SecAggKeys, Weighting, FLConfig):
    """The keys of every codec under SecAgg+."""

    range: float = Field(0.01, gt=0)  # shared clipping range [-range, range] of update values
    field_bits: int | None = Field(None, ge=1, le=62)  # masked field width; null: the narrowest without overflow

    @abstractmethod
    def largest_code(self) -> int:
        """The largest integer the codec gives one coordinate (before the client's weight)."""

    @model_validator(mode="after")
    def _the_field_holds_the_sum(self) -> CompressedConfig:
        from tasks.fl.codecs import check_field, field_bits

        largest = self.largest_code() * self.client_weight_cap()
        if self.field_bits is not None:
            check_field(largest, self.clients_per_round, self.field_bits)
        elif field_bits(largest, self.clients_per_round) > 62:
            raise ValueError(f"field_bits: a round's sum ({self.clients_per_round} clients x {largest}) needs more "
                             "than 62 bits; lower max_weight, bits or clients_per_round")
        return self


class SqConfig(CompressedConfig):
    method: Literal["secagg_sq"] = "secagg_sq"
    bits: Literal[1, 2, 4, 8] = 8  # scalar-quantization bits per value

    def largest_code(self) -> int:
        return 2**self.bits - 1


class PruneConfig(CompressedConfig):
    method: Literal["secagg_prune"] = "secagg_prune"
    bits: Literal[1, 2, 4, 8] = 8  # scalar-quantization bits per kept value
    keep: float = Field(0.15, gt=0, le=1)  # fraction of coordinates the shared mask keeps

    def largest_code(self) -> int:
        return 2**self.bits - 1


class PqConfig(CompressedConfig):
    method: Literal["secagg_pq"] = "secagg_pq"
    pq_codewords: int = Field(15, ge=3, le=255)  # codewords per tensor, odd: pairs +c, -c and 0
    pq_block: int = Field(8, ge=1)  # values per product-quantization block

    @model_validator(mode="after")
    def _odd_codewords(self) -> PqConfig:
        if self.pq_codewords % 2 == 0:
            raise ValueError(f"pq_codewords must be odd (pairs of codewords +c, -c and the zero codeword), "
                             f"got {self.pq_codewords}")
        return self

    def largest_code(self) -> int:
        return 1  # one-hot counts of codeword choices


class Compressed(FLMethod):
    """A codec under SecAgg+; subclasses name the codec and the config keys its plan takes."""

    codec_kind: ClassVar[str]
    plan_keys: ClassVar[tuple[str, ...]]

    def client_mods(self, config: CompressedConfig) -> list[Any]:
        from tasks.fl.secure import compressed_secaggplus_mod

        return [compressed_secaggplus_mod]

    def fit_workflow(self, config: CompressedConfig, plan: Any, strategy: Any) -> Any:
        from tasks.fl.secure import CompressedSecAggPlusWorkflow

        shares, threshold = config.flower_shares()
        return CompressedSecAggPlusWorkflow(plan, num_shares=shares, reconstruction_threshold=threshold)

    def round_plan(self, config: CompressedConfig, initial: list[np.ndarray]) -> Any:
        from tasks.fl.rounds import RoundPlan

        return RoundPlan(codec_kind=self.codec_kind, seed=config.seed, dim=int(sum(a.size for a in initial)),
                         clients_per_round=config.clients_per_round, range=config.range,
                         segments=tuple(int(a.size) for a in initial), field_bits=config.field_bits,
                         max_weight=config.client_weight_cap(), **{k: getattr(config, k) for k in self.plan_keys})


@METHODS.register
class SecAggSq(Compressed):
    Config = SqConfig
    codec_kind, plan_keys = "sq", ("bits",)


@METHODS.register
class SecAggPrune(Compressed):
    Config = PruneConfig
    codec_kind, plan_keys = "prune", ("bits", "keep")


@METHODS.register
class SecAggPq(Compressed):
    Config = PqConfig
    codec_kind, plan_keys = "pq", ("pq_codewords", "pq_block")
