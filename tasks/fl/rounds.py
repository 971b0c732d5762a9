"""What the server decides each round for the compressed methods, and the flat-vector helpers.

A :class:`RoundPlan` is the one place that knows a round's codec: the server's workflow decodes
with it and its :meth:`RoundPlan.fit_config` sends the same parameters to every client in the
fit instructions (the shared range, the pruning mask's seed, the product-quantization
codebook), from which :func:`codec_from_config` rebuilds the codec on the client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks.fl.codecs import (
    RandomMaskPruner, ScalarQuantizer, SecureIndexer, check_field, field_bits, pq_codebook)


def flatten(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in arrays])


def unflatten(flat: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
    out, start = [], 0
    for a in like:
        out.append(flat[start:start + a.size].reshape(a.shape).astype(np.float32))
        start += a.size
    return out


def codec_from_config(cfg: dict[str, Any]) -> Any:
    """The codec a client rebuilds from its fit instructions."""
    kind = cfg["fl.codec"]
    if kind == "sq":
        return ScalarQuantizer(int(cfg["fl.bits"]), float(cfg["fl.range"]))
    if kind == "prune":
        return RandomMaskPruner(float(cfg["fl.keep"]), int(cfg["fl.mask_seed"]), int(cfg["fl.bits"]), float(cfg["fl.range"]))
    if kind == "pq":
        k, block = int(cfg["fl.pq_codewords"]), int(cfg["fl.pq_block"])
        segments = tuple(int(n) for n in str(cfg["fl.pq_segments"]).split(","))
        flat = np.frombuffer(cfg["fl.codebook"], dtype=np.float32).reshape(len(segments), k, block)
        return SecureIndexer(tuple(cb.copy() for cb in flat), segments)
    raise ValueError(f"unknown codec {kind!r}; allowed: sq, prune, pq")


@dataclass
class RoundPlan:
    """Per-round codec parameters of a compressed method, chosen by the server.

    ``codec``: sq, prune or pq. ``max_weight``: the most a client weighs (1: uniform weighting);
    a client's integers are multiplied by its weight. ``field_bits``: the masked field's width;
    ``None`` picks the narrowest that holds the sum of ``clients_per_round`` weighted clients, a
    narrower one is rejected.
    """

    codec_kind: str
    seed: int
    dim: int
    clients_per_round: int
    bits: int = 8
    range: float = 0.05
    keep: float = 0.1
    pq_codewords: int = 3
    pq_block: int = 8
    pq_iters: int = 5
    pq_warmup: int = 2
    segments: tuple[int, ...] | None = None  # the model's tensor sizes (pq: a codebook each); None: one
    field_bits: int | None = None
    max_weight: int = 1
    _aggregates: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _codebooks: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.codec_kind not in ("sq", "prune", "pq"):
            raise ValueError(f"unknown codec {self.codec_kind!r}; allowed: sq, prune, pq")
        self.segments = (self.dim,) if self.segments is None else tuple(int(n) for n in self.segments)
        if sum(self.segments) != self.dim:
            raise ValueError(f"segments {self.segments} do not add up to dim {self.dim}")
        narrowest = field_bits(self.max_value, self.clients_per_round)
        if self.field_bits is None:
            self.field_bits = narrowest
        check_field(self.max_value, self.clients_per_round, self.field_bits)

    @property
    def max_value(self) -> int:
        """The largest integer one client adds to a coordinate: its codec's largest times its weight."""
        return (1 if self.codec_kind == "pq" else 2**self.bits - 1) * self.max_weight

    def _codebook(self, rnd: int) -> np.ndarray:
        if rnd not in self._codebooks:
            previous = self._aggregates.get(rnd - 1)
            if previous is None:
                raise RuntimeError(f"round {rnd}: no aggregate of round {rnd - 1} to learn a codebook from")
            rng = np.random.default_rng([self.seed, rnd, 2])
            bounds = np.cumsum((0, *self.segments))
            self._codebooks[rnd] = np.stack([
                pq_codebook(previous[bounds[i]:bounds[i + 1]], block=self.pq_block, codewords=self.pq_codewords,
                            iters=self.pq_iters, rng=rng) for i in range(len(self.segments))])
        return self._codebooks[rnd]

    def fit_config(self, rnd: int) -> dict[str, Any]:
        """What every client of round ``rnd`` needs to encode its update.

        Product quantization needs an update to learn its codebooks from: its first ``pq_warmup``
        rounds use 1-bit scalar quantization (in the same field), as FLSim's PQ channel does
        with its warm-up updates. Then each round's codebooks come from the last round's
        aggregate (:func:`tasks.fl.codecs.pq_codebook`). FLSim instead learns them from the
        update of a "mock" client outside the round's cohort, trained in the clear; that would
        show one client's update to the server each round, so it is not followed here.
        """
        kind = "sq" if self.codec_kind == "pq" and rnd <= self.pq_warmup else self.codec_kind
        bits = 1 if self.codec_kind == "pq" else self.bits
        cfg: dict[str, Any] = {"fl.codec": kind, "fl.seed": self.seed, "fl.round": rnd,
                               "fl.bits": bits, "fl.range": float(self.range), "fl.max_weight": self.max_weight}
        if kind == "prune":
            cfg.update({"fl.keep": float(self.keep), "fl.mask_seed": self.mask_seed(rnd)})
        if kind == "pq":
            cfg.update({"fl.pq_codewords": self.pq_codewords, "fl.pq_block": self.pq_block,
                        "fl.pq_segments": ",".join(map(str, self.segments)),  # fit configs hold scalars
                        "fl.codebook": self._codebook(rnd).tobytes()})
        return cfg

    def mask_seed(self, rnd: int) -> int:
        return int(np.random.default_rng([self.seed, rnd, 1]).integers(2**31))

    def codec(self, rnd: int) -> Any:
        return codec_from_config(self.fit_config(rnd))

    def record_aggregate(self, rnd: int, mean_delta: np.ndarray) -> None:
        """Keep round ``rnd``'s aggregated (decoded mean) update: the next codebooks' source."""
        self._aggregates = {rnd: np.asarray(mean_delta, dtype=np.float32)}
