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

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Quality:
    perplexity: float
    next_token_accuracy: float
    tokens: int  # tokens predicted


@dataclass(frozen=True)
class Speed:
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    ttft_ms: float  # prompt in, first generated token out (batch of one)
    compiled: bool = False  # decoded by tasks.llm.decode.CompiledDecoder rather than the eager model
    decoded_tokens: int = 0  # tokens each timed repeat decoded after the first (new_tokens - 1)
    decode_s: tuple[float, ...] = ()  # each timed repeat's decoding time
    read_gb_per_s: tuple[float, ...] = ()  # probe_bandwidth=True: the bandwidth probed right after each repeat

    def decode_of_bound(self, bytes_per_token: float) -> float:
        """Median over repeats of decode speed / (bandwidth / bytes read per token), each repeat against the
        probe taken right after it, so that a change of load between repeats moves both sides together."""
        if not self.read_gb_per_s:
            raise ValueError("no bandwidth was probed: measure_speed(..., probe_bandwidth=True)")
        return statistics.median(self.decoded_tokens / d / (bw * 1e9 / bytes_per_token)
                                 for d, bw in zip(self.decode_s, self.read_gb_per_s))


@torch.inference_mode()
def evaluate_quality(model: Any, token_ids: Sequence[int], *, context: int, max_tokens: int,
                     batch_size: int = 2, progress: Callable[[int, int], None] = lambda d, t: None) -> Quality:
    """Perplexity and top-1 accuracy over non-overlapping windows of ``context`` tokens."""
    ids = torch.tensor(list(token_ids)[:max_tokens + 1])
    n_windows = (len(ids) - 1) // context
    if n_windows < 1:
        raise ValueError(f"held-out text has {len(ids)} tokens, fewer than one window of {context}")
    windows = ids[:n_windows * context + 1]
    nll = correct = count = 0.0
    for start in range(0, n_windows, batch_size):
        rows = range(start, min(start + batch_size, n_windows))
        x = torch.stack([windows[r * context:(r + 1) * context] for r in rows]).to(model.device)
        y = torch.stack([windows[r * context + 1:(r + 1) * context + 1] for r in rows]).to(model.device)
        logits = model(input_ids=x, use_cache=False).logits.float()
        nll += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
        correct += float((logits.argmax(-1) == y).sum())
        count += y.numel()
        progress(rows[-1] + 1, n_windows)
    return Quality(math.exp(nll / count), correct / count, int(count))


@torch.inference_mode()
def greedy(model: Any, prompts: torch.Tensor, new_tokens: int) -> tuple[torch.Tensor, float, float]:
    """Greedy continuation of equal-length prompts: (tokens [B, new_tokens], prefill s, decode s).

    Prefill time runs from the prompt to the first generated token; decode time covers the rest.
    """
    prompts = prompts.to(model.device)
    _sync(prompts)
    start = time.perf_counter()
    out = model(input_ids=prompts, use_cache=True, logits_to_keep=1)  # the last position's logits, as generate
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    _sync(token)
    first = time.perf_counter()
    generated = [token]
    cache = out.cache  # transformers 5: the KV cache travels as ``cache`` (past_key_values is deprecated)
    for _ in range(new_tokens - 1):
        out = model(input_ids=token, cache=cache, use_cache=True)
        cache = out.cache
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        generated.append(token)
    _sync(token)
    end = time.perf_counter()
    return torch.cat(generated, dim=1), first - start, end - first


def measure_speed(model: Any, prompt: Sequence[int], *, new_tokens: int, repeats: int, warmup: int = 1,
                  compiled: bool = False, probe_bandwidth: bool = False) -> Speed:
    """Batch-one greedy generation of a fixed prompt: the median over ``repeats`` after ``warmup`` runs.

    ``compiled=True`` decodes with :class:`tasks.llm.decode.CompiledDecoder` where the model allows it
    (its compilation happens in the warm-up, which must then be at least 1) and eagerly otherwise;
    ``Speed.compiled`` says which ran. ``probe_bandwidth=True`` runs :func:`memory_read_gb_per_s` (128 MiB,
    four times this machine's L3) after each timed repeat, under the same load as that repeat.
    """
    if new_tokens < 2:
        raise ValueError("new_tokens must be >= 2 to time decoding")
    run, is_compiled = _decoder(model, compiled=compiled, warmup=warmup)
    ids = torch.tensor([list(prompt)])
    for _ in range(warmup):
        run(ids, new_tokens)
    prefill, decode, bandwidth = [], [], []
    for _ in range(repeats):
        _, p, d = run(ids, new_tokens)
        prefill.append(p)
        decode.append(d)
        if probe_bandwidth:
            bandwidth.append(memory_read_gb_per_s(mib=128))
    p, d = statistics.median(prefill), statistics.median(decode)
    return Speed(ids.shape[1] / p, (new_tokens - 1) / d, 1000 * p, compiled=is_compiled,
                 decoded_tokens=new_tokens - 1, decode_s=tuple(decode),
                 read_gb_per_s=tuple(bandwidth))


def memory_read_gb_per_s(*, mib: int = 256, repeats: int = 5) -> float:
    """Bytes per second a sum over a ``mib`` MiB float32 tensor reads: the best of ``repeats`` (GB/s).

    Read-only, like decoding's weight traffic; 256 MiB is far beyond any CPU cache here, so the sum
    streams from memory. Runs with the calling process's torch threads.
    """
    data = torch.ones(mib * 2**20 // 4)
    data.sum()  # fault the pages in
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - start)
    return data.numel() * 4 / best / 1e9


def _decoder(model: Any, *, compiled: bool, warmup: int) -> tuple[Callable[..., Any], bool]:
    """The greedy loop to time, and whether it is the compiled one."""
    from tasks.llm.decode import CompiledDecoder, unsupported_reason

    if not compiled or unsupported_reason(model) is not None:
        return (lambda prompts, new_tokens: greedy(model, prompts, new_tokens)), False
    if warmup < 1:
        raise ValueError("compiled decoding needs warmup >= 1: its first run compiles")
    return CompiledDecoder(model).greedy, True


def _sync(tensor: torch.Tensor) -> None:
    """Wait for queued GPU work, so that wall-clock timers measure it."""
    if tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)
