"""What the model does with the secrets: log-likelihoods of continuations, and greedy extraction.

Scoring 10,000 candidates per variant is the family's largest evaluation cost, so the shared
template is run once and its key/value cache reused for every batch of candidates: each candidate
costs only its own tokens.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


@torch.inference_mode()
def continuation_logprobs(model: Any, prefix: Sequence[int], continuations: Sequence[Sequence[int]], *,
                          batch_size: int) -> np.ndarray:
    """log P(continuation | prefix) in nats for each continuation (token ids), by ``model``.

    Continuations may differ in length (a pretrained tokenizer groups digits unevenly); shorter ones
    are padded at the end, where causal attention keeps the padding from reaching their tokens.
    """
    if not prefix:
        raise ValueError("continuation_logprobs needs a non-empty prefix (the template)")
    device = model.device
    out = model(input_ids=torch.tensor([list(prefix)], device=device), use_cache=True)
    first = torch.log_softmax(out.logits[0, -1].float(), -1)
    base = out.cache
    scores = []
    for start in range(0, len(continuations), batch_size):
        batch = continuations[start:start + batch_size]
        width = max(len(c) for c in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.bool)
        for i, c in enumerate(batch):
            ids[i, :len(c)] = torch.tensor(list(c))
            mask[i, :len(c)] = True
        ids, mask = ids.to(device), mask.to(device)
        logp = torch.empty((len(batch), width), device=device)
        logp[:, 0] = first[ids[:, 0]]
        if width > 1:
            cache = copy.deepcopy(base)
            cache.batch_repeat_interleave(len(batch))
            logits = model(input_ids=ids[:, :-1], cache=cache, use_cache=True).logits.float()
            logp[:, 1:] = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        scores.append((logp * mask).sum(1).cpu())
    return torch.cat(scores).double().numpy()


def log_perplexity_bits(logprobs: np.ndarray) -> np.ndarray:
    """-log2 P: the score exposure ranks by (lower is likelier)."""
    return -np.asarray(logprobs, dtype=float) / math.log(2)


@torch.inference_mode()
def greedy_matches(model: Any, prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> np.ndarray:
    """For each prompt, whether greedy decoding continues it with exactly its target tokens.

    Prompts of equal length decode together; decoding stops at the target's length.
    """
    hits = np.zeros(len(prompts), dtype=bool)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (p, t) in enumerate(zip(prompts, targets)):
        groups.setdefault((len(p), len(t)), []).append(i)
    for (_, length), rows in groups.items():
        ids = torch.tensor([list(prompts[i]) for i in rows], device=model.device)
        for _ in range(length):  # no KV cache: a few tokens of a small model
            logits = model(input_ids=ids, use_cache=False).logits[:, -1]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
        generated = ids[:, -length:].cpu()
        expected = torch.tensor([list(targets[i]) for i in rows])
        hits[rows] = (generated == expected).all(dim=1).numpy()
    return hits
