"""The llm task's meters: perplexity and next-token accuracy, speed, and verbatim memorization.

All of them run the model as a plain causal LM (``model(input_ids, past_key_values=...)``) with
greedy decoding written out as a loop, so prefill and each decode step are timed apart.
"""

from __future__ import annotations

import math
import random
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
    token_losses: tuple[float, ...] = ()  # each predicted token's loss, in text order (for paired comparisons)
    token_correct: tuple[float, ...] = ()  # 1.0 where the top-1 prediction was the next token
    targets: tuple[int, ...] = ()  # the predicted tokens' ids: what was scored, in order


@dataclass(frozen=True)
class Speed:
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    ttft_ms: float  # prompt in, first generated token out (batch of one)


@dataclass(frozen=True)
class Memorization:
    rate: float  # probes whose greedy continuation equals the true next tokens
    control_rate: float  # the same on sentence-shuffled controls
    probes: int  # per kind
    matched: float  # mean length of the continuation's exact prefix (tokens equal to the truth before the first miss)
    control_matched: float  # the same on the controls


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
def greedy(model: Any, prompts: torch.Tensor, new_tokens: int) -> tuple[torch.Tensor, float, float]:
    """Greedy continuation of equal-length prompts: (tokens [B, new_tokens], prefill s, decode s).

    Prefill time runs from the prompt to the first generated token; decode time covers the rest.
    """
    prompts = prompts.to(model.device)
    _sync(prompts)
    start = time.perf_counter()
    out = model(input_ids=prompts, use_cache=True)
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


def measure_speed(model: Any, prompt: Sequence[int], *, new_tokens: int, repeats: int, warmup: int = 1) -> Speed:
    """Batch-one greedy generation of a fixed prompt: the median over ``repeats`` after ``warmup`` runs."""
    if new_tokens < 2:
        raise ValueError("new_tokens must be >= 2 to time decoding")
    ids = torch.tensor([list(prompt)])
    for _ in range(warmup):
        greedy(model, ids, new_tokens)
    prefill, decode = [], []
    for _ in range(repeats):
        _, p, d = greedy(model, ids, new_tokens)
        prefill.append(p)
        decode.append(d)
    p, d = statistics.median(prefill), statistics.median(decode)
    return Speed(ids.shape[1] / p, (new_tokens - 1) / d, 1000 * p)


def probe_positions(n_tokens: int, *, count: int, prefix: int, target: int, rng: random.Random) -> list[int]:
    """``count`` distinct start offsets of a prefix+target window inside ``n_tokens`` tokens."""
    last = n_tokens - prefix - target
    if last < 0:
        raise ValueError(f"text of {n_tokens} tokens is shorter than prefix {prefix} + target {target}")
    return sorted(rng.sample(range(last + 1), min(count, last + 1)))


def memorization(model: Any, texts: Sequence[Sequence[int]], controls: Sequence[Sequence[int]], *,
                 probes_per_text: int, prefix: int, target: int, seed: int, batch_size: int = 16) -> Memorization:
    """Share of probes whose greedy continuation reproduces the next ``target`` tokens exactly.

    From each text (and each control) ``probes_per_text`` windows are drawn with ``seed``: the first
    ``prefix`` tokens prompt the model, the next ``target`` are what it must reproduce.

    Beside the paper's all-or-nothing rate, the mean length of each continuation's verbatim prefix is
    returned: a small model rarely reproduces 50 tokens, but how far it follows a text it has seen, against
    the shuffled control, still measures memorization (the rate at length k is the share with matched >= k).
    """
    rng = random.Random(seed)

    def windows(docs: Sequence[Sequence[int]]) -> list[list[int]]:
        out = []
        for doc in docs:
            for p in probe_positions(len(doc), count=probes_per_text, prefix=prefix, target=target, rng=rng):
                out.append(list(doc[p:p + prefix + target]))
        return out

    def matched(rows: list[list[int]]) -> list[int]:
        lengths = []
        for start in range(0, len(rows), batch_size):
            batch = torch.tensor(rows[start:start + batch_size])
            generated, _, _ = greedy(model, batch[:, :prefix], target)
            equal = (generated.cpu() == batch[:, prefix:]).long()
            lengths += equal.cumprod(dim=1).sum(dim=1).tolist()  # tokens before the first mismatch
        return lengths

    probes, control = windows(texts), windows(controls)
    # Probes and controls share batches: a decoding step reads every weight once whatever the batch, so one
    # batch of 2n rows costs little more than one of n.
    lengths = matched(probes + control)
    ours, theirs = lengths[:len(probes)], lengths[len(probes):]
    return Memorization(rate=sum(n == target for n in ours) / len(ours),
                        control_rate=sum(n == target for n in theirs) / len(theirs), probes=len(ours),
                        matched=sum(ours) / len(ours), control_matched=sum(theirs) / len(theirs))


def _sync(tensor: torch.Tensor) -> None:
    """Wait for queued GPU work, so that wall-clock timers measure it."""
    if tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)
