"""The llm task's meters: perplexity and next-token accuracy, speed, and the memory-read bandwidth.

Quality and the eager speed path run the model as a plain causal LM (``model(input_ids, cache=...)``)
with greedy decoding written out as a loop, so prefill and each decode step are timed apart; the
compiled path (:mod:`tasks.llm.decode`) times the same two phases.

The decode bound: batch-one decoding reads every weight once per token, so it cannot be faster than
memory bandwidth divided by the bytes it reads. :func:`memory_read_gb_per_s` measures that bandwidth
with a read-only probe (a sum over a tensor far larger than the caches: no write traffic, unlike a copy)
in the calling process, right after each timed decoding, so it runs under the same concurrency.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tasks.llm.clock import busy_clock, spans, stamp, sync


@dataclass(frozen=True)
class Quality:
    perplexity: float
    next_token_accuracy: float
    tokens: int  # tokens predicted
    token_losses: tuple[float, ...] = ()  # each predicted token's loss, in text order (for paired comparisons)
    token_correct: tuple[float, ...] = ()  # 1.0 where the top-1 prediction was the next token
    targets: tuple[int, ...] = ()  # the predicted tokens' ids: what was scored, in order


@dataclass(frozen=True)
class Speed:
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    ttft_ms: float  # prompt in, first generated token out (batch of one)
    compiled: bool = False  # decoded by tasks.llm.decode.CompiledDecoder rather than the eager model
    decoded_tokens: int = 0  # tokens each timed repeat decoded after the first (new_tokens - 1)
    decode_busy_s: tuple[float, ...] = ()  # each timed repeat's decoding time on the busy clock (see busy_clock)
    read_gb_per_s: tuple[float, ...] = ()  # probe_bandwidth=True: bandwidth probed right after each repeat (busy clock)

    @property
    def decode_tokens_per_busy_s(self) -> float:
        """Decoded tokens per second of the busy clock (median over repeats)."""
        return self.decoded_tokens / statistics.median(self.decode_busy_s)

    def decode_of_bound(self, bytes_per_token: float) -> float:
        """Median over repeats of decode speed / (bandwidth / bytes read per token), each repeat against the
        probe taken right after it, both timed by the busy clock: a change of load between repeats moves both
        sides together, and time spent waiting for a core on a shared machine counts on neither."""
        if not self.read_gb_per_s:
            raise ValueError("no bandwidth was probed: measure_speed(..., probe_bandwidth=True)")
        return statistics.median(self.decoded_tokens / d / (bw * 1e9 / bytes_per_token)
                                 for d, bw in zip(self.decode_busy_s, self.read_gb_per_s))


@torch.inference_mode()
def evaluate_quality(model: Any, token_ids: Sequence[int], *, context: int, max_tokens: int,
                     batch_size: int = 2, progress: Callable[[int, int], None] = lambda d, t: None) -> Quality:
    """Perplexity and top-1 accuracy over non-overlapping windows of ``context`` tokens."""
    ids = torch.tensor(list(token_ids)[:max_tokens + 1])
    n_windows = (len(ids) - 1) // context
    if n_windows < 1:
        raise ValueError(f"held-out text has {len(ids)} tokens, fewer than one window of {context}")
    windows = ids[:n_windows * context + 1]
    losses: list[float] = []
    hits: list[float] = []
    targets: list[int] = []
    for start in range(0, n_windows, batch_size):
        rows = range(start, min(start + batch_size, n_windows))
        x = torch.stack([windows[r * context:(r + 1) * context] for r in rows]).to(model.device)
        y = torch.stack([windows[r * context + 1:(r + 1) * context + 1] for r in rows]).to(model.device)
        logits = model(input_ids=x, use_cache=False).logits.float()
        losses += torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").tolist()
        hits += (logits.argmax(-1) == y).flatten().float().tolist()
        targets += y.flatten().tolist()
        progress(rows[-1] + 1, n_windows)
    count = len(losses)
    return Quality(math.exp(math.fsum(losses) / count), math.fsum(hits) / count, count, tuple(losses), tuple(hits),
                   tuple(targets))


@torch.inference_mode()
def greedy(model: Any, prompts: torch.Tensor, new_tokens: int, *,
           busy_s: list[float] | None = None) -> tuple[torch.Tensor, float, float]:
    """Greedy continuation of equal-length prompts: (tokens [B, new_tokens], prefill s, decode s).

    Prefill time runs from the prompt to the first generated token; decode time covers the rest (wall
    clock). ``busy_s``, if given, receives the same two spans on :func:`busy_clock`.
    """
    prompts = prompts.to(model.device)
    clock = busy_clock(prompts.device)
    start = stamp(prompts, clock)
    out = model(input_ids=prompts, use_cache=True, logits_to_keep=1)  # the last position's logits, as generate
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    first = stamp(token, clock)
    generated = [token]
    cache = out.cache  # transformers 5: the KV cache travels as ``cache`` (past_key_values is deprecated)
    for _ in range(new_tokens - 1):
        out = model(input_ids=token, cache=cache, use_cache=True)
        cache = out.cache
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        generated.append(token)
    end = stamp(token, clock)
    return torch.cat(generated, dim=1), *spans(start, first, end, busy_s)


def measure_speed(model: Any, prompt: Sequence[int], *, new_tokens: int, repeats: int, warmup: int = 1,
                  compiled: bool = False, probe_bandwidth: bool = False) -> Speed:
    """Batch-one greedy generation of a fixed prompt: the median over ``repeats`` after ``warmup`` runs.

    ``compiled=True`` decodes with :class:`tasks.llm.decode.CompiledDecoder` where the model allows it
    (its compilation happens in the warm-up, which must then be at least 1) and eagerly otherwise;
    ``Speed.compiled`` says which ran. ``probe_bandwidth=True`` runs :func:`memory_read_gb_per_s` on the
    model's device after each timed repeat, under the same load as that repeat.
    """
    if new_tokens < 2:
        raise ValueError("new_tokens must be >= 2 to time decoding")
    run, is_compiled = _decoder(model, compiled=compiled, warmup=warmup)
    ids = torch.tensor([list(prompt)])
    for _ in range(warmup):
        run(ids, new_tokens)
    prefill, decode, busy, bandwidth = [], [], [], []
    for _ in range(repeats):
        busy_spans: list[float] = []
        _, p, d = run(ids, new_tokens, busy_s=busy_spans)
        prefill.append(p)
        decode.append(d)
        busy.append(busy_spans[1])
        if probe_bandwidth:
            bandwidth.append(memory_read_gb_per_s(device=model.device))
    p, d = statistics.median(prefill), statistics.median(decode)
    return Speed(ids.shape[1] / p, (new_tokens - 1) / d, 1000 * p, compiled=is_compiled,
                 decoded_tokens=new_tokens - 1, decode_busy_s=tuple(busy), read_gb_per_s=tuple(bandwidth))


def memory_read_gb_per_s(*, mib: int | None = None, repeats: int = 5, device: Any = "cpu") -> float:
    """Bytes per second of :func:`busy_clock` that a sum over a float32 tensor reads: the best of ``repeats``.

    Read-only, like decoding's weight traffic. The tensor, on ``device``, is ``mib`` MiB: by default 128 on a
    CPU (four times this machine's 32 MiB L3) and 2048 on a GPU (far beyond any L2), so the sum streams from
    memory. Runs with the calling process's torch threads.
    """
    device = torch.device(device)
    mib = mib or (128 if device.type == "cpu" else 2048)
    data = torch.ones(mib * 2**20 // 4, device=device)
    clock = busy_clock(device)
    best = float("inf")
    for i in range(repeats + 1):  # the first pass faults the pages in
        start = stamp(data, clock)[1]
        data.sum()
        elapsed = stamp(data, clock)[1] - start
        best = min(best, elapsed) if i else best
    return data.numel() * 4 / best / 1e9


def _decoder(model: Any, *, compiled: bool, warmup: int) -> tuple[Callable[..., Any], bool]:
    """The greedy loop to time, and whether it is the compiled one."""
    from tasks.llm.decode import CompiledDecoder, unsupported_reason

    if not compiled or unsupported_reason(model) is not None:
        return functools.partial(greedy, model), False
    if warmup < 1:
        raise ValueError("compiled decoding needs warmup >= 1: its first run compiles")
    return CompiledDecoder(model).greedy, True
