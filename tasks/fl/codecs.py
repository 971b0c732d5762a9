"""Update codecs that survive secure aggregation: pure functions, no Flower, no state.

Secure aggregation only ever reveals the modular sum of the clients' integer vectors, so a
codec here maps a float update to non-negative integers whose *sum* decodes to the mean update
(Prasad et al., 2022, "Reconciling Security and Communication Efficiency in Federated
Learning"). Every client of a round uses the same decoding parameters (range, mask, codebook),
sent by the server, so that the integer sum is meaningful. The field must hold the sum of the
round's clients without wrapping: :func:`field_bits` gives the narrowest one, and the masked
vector travels packed at that width (:func:`pack`).

Codecs:

* :class:`ScalarQuantizer`: ``bits``-bit stochastic rounding on a shared range ``[-r, r]``.
* :class:`RandomMaskPruner`: the same server-seeded random subset of coordinates for every
  client, each kept coordinate scalar-quantized as above.
* :class:`SecureIndexer`: product quantization with server codebooks (one per tensor); each
  client contributes the one-hot vectors of its codeword choices, whose sum over clients is
  what the paper's Secure Indexing reveals to the server (how many clients picked each codeword
  of each block).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


class OverflowConfigError(ValueError):
    """A field too narrow for the sum of a round's clients."""


def field_bits(max_value: int, clients: int) -> int:
    """Bits of the narrowest power-of-two field that holds ``clients`` values of at most ``max_value``."""
    if max_value < 1 or clients < 1:
        raise ValueError(f"max_value and clients must be >= 1, got {max_value} and {clients}")
    return max(1, math.ceil(math.log2(max_value * clients + 1)))


def check_field(max_value: int, clients: int, bits: int) -> None:
    """Reject a field of ``bits`` bits in which ``clients`` values of ``max_value`` could wrap."""
    if max_value * clients > 2**bits - 1:
        raise OverflowConfigError(
            f"a {bits}-bit field overflows: {clients} clients x {max_value} (largest quantized value) "
            f"= {max_value * clients} > {2**bits - 1}; use at least {field_bits(max_value, clients)} bits "
            "(or fewer quantization levels, or fewer clients per round)")


def pack(values: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers < 2**bits at ``bits`` bits each (little-endian bit order)."""
    values = np.asarray(values, dtype=np.uint64)
    if values.size and int(values.max()) >= 2**bits:
        raise ValueError(f"value {int(values.max())} does not fit in {bits} bits")
    shifts = np.arange(bits, dtype=np.uint64)
    bit_matrix = ((values[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bit_matrix.ravel(), bitorder="little").tobytes()


def unpack(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack`: ``count`` integers as int64."""
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if flat.size < count * bits:
        raise ValueError(f"{len(data)} bytes hold fewer than {count} values of {bits} bits")
    bit_matrix = flat[: count * bits].reshape(count, bits).astype(np.int64)
    return (bit_matrix << np.arange(bits, dtype=np.int64)).sum(axis=1)


def stochastic_quantize(x: np.ndarray, *, r: float, levels: int, rng: np.random.Generator) -> np.ndarray:
    """Unbiased stochastic rounding of ``clip(x, -r, r)`` onto ``levels + 1`` evenly spaced points."""
    scaled = (np.clip(x, -r, r) + r) / (2 * r) * levels
    low = np.floor(scaled)
    return (low + (rng.random(x.shape) < scaled - low)).astype(np.int64)


def dequantize_mean(total: np.ndarray, *, clients: int, r: float, levels: int) -> np.ndarray:
    """The mean of ``clients`` dequantized values from the sum of their integers."""
    return (total.astype(np.float64) / clients / levels * 2 * r - r).astype(np.float32)


@dataclass(frozen=True)
class ScalarQuantizer:
    """``bits``-bit scalar quantization on the shared range ``[-r, r]`` (stochastic rounding)."""

    bits: int
    r: float

    @property
    def levels(self) -> int:
        return 2**self.bits - 1

    def length(self, dim: int) -> int:
        return dim

    def max_value(self) -> int:
        return self.levels

    def encode(self, delta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return stochastic_quantize(delta, r=self.r, levels=self.levels, rng=rng)

    def decode(self, total: np.ndarray, clients: int, dim: int) -> np.ndarray:
        return dequantize_mean(total, clients=clients, r=self.r, levels=self.levels)


def shared_mask(dim: int, keep: float, seed: int) -> np.ndarray:
    """Sorted indices of the ``round(keep * dim)`` coordinates kept this round (same for every client)."""
    count = max(1, round(keep * dim))
    return np.sort(np.random.default_rng(seed).choice(dim, size=count, replace=False))


@dataclass(frozen=True)
class RandomMaskPruner:
    """Keep the coordinates of a server-seeded random mask, scalar-quantize them; the rest are 0.

    The decoded mean is scaled by ``1 / keep`` on the kept coordinates, so that it is an unbiased
    estimate of the full mean update (random sparsification), not one ``keep`` times too small.
    """

    keep: float
    seed: int
    bits: int
    r: float

    def _quantizer(self) -> ScalarQuantizer:
        return ScalarQuantizer(self.bits, self.r)

    def length(self, dim: int) -> int:
        return len(shared_mask(dim, self.keep, self.seed))

    def max_value(self) -> int:
        return self._quantizer().levels

    def encode(self, delta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self._quantizer().encode(delta[shared_mask(delta.size, self.keep, self.seed)], rng)

    def decode(self, total: np.ndarray, clients: int, dim: int) -> np.ndarray:
        out = np.zeros(dim, dtype=np.float32)
        out[shared_mask(dim, self.keep, self.seed)] = self._quantizer().decode(total, clients, dim) / self.keep
        return out


def blocks(x: np.ndarray, block: int) -> np.ndarray:
    """``x`` zero-padded to a multiple of ``block`` and cut into rows of ``block`` values."""
    pad = (-x.size) % block
    return np.concatenate([x, np.zeros(pad, dtype=x.dtype)]).reshape(-1, block)


def kmeans_codebook(x: np.ndarray, *, block: int, codewords: int, iters: int, seed: int) -> np.ndarray:
    """A ``codewords x block`` codebook: k-means (Lloyd) over the blocks of ``x``.

    Written here rather than taken from scikit-learn so that the server's codebook stays a few
    lines of numpy with a fixed seed; scikit-learn's KMeans would do equally well.
    """
    rows = blocks(np.asarray(x, dtype=np.float32), block)
    rng = np.random.default_rng(seed)
    centers = rows[rng.choice(len(rows), size=min(codewords, len(rows)), replace=False)].copy()
    for _ in range(iters):
        assign = nearest_codeword(rows, centers)
        for c in range(len(centers)):
            members = rows[assign == c]
            if len(members):
                centers[c] = members.mean(axis=0)
    return centers.astype(np.float32)


def nearest_codeword(rows: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    d2 = (rows**2).sum(1)[:, None] - 2 * rows @ codebook.T + (codebook**2).sum(1)[None, :]
    return d2.argmin(axis=1)


def pq_codebook(x: np.ndarray, *, block: int, codewords: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """The server's codebook for one tensor: ``codewords`` (odd) rows of ``block`` values.

    ``(codewords - 1) / 2`` directions, each with its negation, and the zero codeword last.
    Half the directions (rounded down) are k-means centres of ``x``'s blocks (``x``: this
    tensor's slice of the last aggregated update), the others fresh random directions drawn by
    the server. A codebook learned only from past aggregates is a closed loop: the aggregate
    decodes into the span of the codebook it was encoded with, so k-means on it never finds a
    new direction. The random directions keep every direction reachable; their length is twice
    the 95th percentile of ``x``'s block norms. FLSim instead learns codebooks from the update
    of a "mock" client trained in the clear, which would show one client's update to the server.
    """
    if codewords < 3 or codewords % 2 == 0:
        raise ValueError(f"a codebook has an odd number (>= 3) of codewords (pairs +c, -c and 0), got {codewords}")
    rows = blocks(np.asarray(x, dtype=np.float32), block)
    pairs = (codewords - 1) // 2
    learned = min(pairs // 2, len(rows))
    norms = np.sqrt((rows.astype(np.float64) ** 2).sum(1))
    scale = max(2.0 * float(np.quantile(norms, 0.95)), 1e-6)
    directions = rng.normal(size=(pairs - learned, block))
    directions *= scale / np.linalg.norm(directions, axis=1, keepdims=True)
    parts = [directions.astype(np.float32)]
    if learned:
        parts.insert(0, kmeans_codebook(x, block=block, codewords=learned, iters=iters,
                                        seed=int(rng.integers(2**31))))
    half = np.concatenate(parts)
    return np.concatenate([half, -half, np.zeros((1, block), dtype=np.float32)]).astype(np.float32)


@dataclass(frozen=True)
class SecureIndexer:
    """Product quantization aggregated as a histogram of codeword indices (Secure Indexing).

    Each tensor of the model (``segments``: their sizes, in order) has its own codebook
    (``codebooks``, ``k x block`` each, the last row the zero codeword), as in FLSim's PQ
    channel, which quantizes each weight matrix with its own centroids. Every block of
    ``block`` values picks one codeword; the client sends the one-hot vector of that choice.
    Summed under secure aggregation these give, per block, how many clients chose each
    codeword, and nothing else: the mean block is the count-weighted mean of the codewords.
    The zero codeword's count is implied (clients minus the others), so ``k - 1`` counts travel
    per block.

    Each block takes its nearest codeword (deterministic, as in FLSim's PQ channel); the client
    keeps what the codeword missed for its next update (error feedback, :func:`tasks.fl.secure._encode`).
    """

    codebooks: tuple[np.ndarray, ...]
    segments: tuple[int, ...]

    def _layout(self, dim: int) -> list[tuple[int, int, np.ndarray]]:
        if sum(self.segments) != dim or len(self.codebooks) != len(self.segments):
            raise ValueError(f"{len(self.codebooks)} codebooks for segments {self.segments} of a {dim}-value update")
        bounds = np.cumsum((0, *self.segments))
        return [(int(bounds[i]), int(bounds[i + 1]), cb) for i, cb in enumerate(self.codebooks)]

    @staticmethod
    def _counts(lo: int, hi: int, codebook: np.ndarray) -> int:
        """Integers one client sends for the tensor ``[lo, hi)``: k - 1 counts per block."""
        k, block = codebook.shape
        return math.ceil((hi - lo) / block) * (k - 1)

    def length(self, dim: int) -> int:
        return sum(self._counts(lo, hi, cb) for lo, hi, cb in self._layout(dim))

    def max_value(self) -> int:
        return 1

    def encode(self, delta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = []
        for lo, hi, cb in self._layout(delta.size):
            k, block = cb.shape
            rows = blocks(delta[lo:hi].astype(np.float32), block)
            choice = nearest_codeword(rows, cb)
            one_hot = np.zeros((len(rows), k), dtype=np.int64)
            one_hot[np.arange(len(rows)), choice] = 1
            out.append(one_hot[:, : k - 1].ravel())
        return np.concatenate(out)

    def decode(self, total: np.ndarray, clients: int, dim: int) -> np.ndarray:
        out, start = [], 0
        for lo, hi, cb in self._layout(dim):
            n, k = self._counts(lo, hi, cb), cb.shape[0]
            counts = total[start:start + n].reshape(-1, k - 1).astype(np.float64)
            start += n
            counts = np.concatenate([counts, clients - counts.sum(1, keepdims=True)], axis=1)
            out.append(((counts / clients) @ cb.astype(np.float64)).ravel()[: hi - lo])
        return np.concatenate(out).astype(np.float32)
