"""The family's privacy measures on one model: exposure and extraction per repetition count, the audit.

All three read the secrets of one :class:`~tasks.memorization.canaries.CanaryPlan` behind one
template. The sampled candidates are scored once per model, together with every canary and audit
canary, and every canary is ranked against that one sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from suite.audit import audit_scores
from tasks.memorization import canaries as planting
from tasks.memorization import corpus
from tasks.memorization.config import MemorizationConfig
from tasks.memorization.exposure import fitted_exposure, rank_exposure
from tasks.memorization.score import continuation_logprobs, greedy_matches, log_perplexity_bits


@dataclass(frozen=True)
class Scores:
    """Log-perplexities in bits (lower: likelier) of the candidates, the canaries and the audit canaries."""

    candidates: np.ndarray
    canaries: np.ndarray
    audit: np.ndarray


@dataclass(frozen=True)
class Secrets:
    """The plan's secrets and sampled candidates as token ids behind the template's ids."""

    plan: planting.CanaryPlan
    prefix: list[int]  # [bos] + the template's tokens
    candidates: list[list[int]]
    canaries: list[list[int]]
    audit: list[list[int]]
    prompts: list[list[int]]  # extraction: prefix + the canary's first digits
    targets: list[list[int]]  # extraction: the rest of the canary's tokens
    space_bits: float  # log2 of the number of possible secrets

    @classmethod
    def make(cls, config: MemorizationConfig, tokenizer: Any, plan: planting.CanaryPlan) -> Secrets:
        sample = planting.sample_candidates(seed=config.seed, count=config.candidates, digits=config.secret_digits)
        texts = [planting.secret_text(s) for s in (*sample, *plan.exposure_secrets, *plan.audit_secrets)]
        head, tails = corpus.encode_after(tokenizer, config.template, texts)
        n, k = len(sample), len(plan.exposure_secrets)
        bos = corpus.bos_ids(tokenizer)
        prompts, targets = [], []
        for secret in texts[n:n + k]:
            cut = config.extraction_prompt_digits
            start, (rest,) = corpus.encode_after(tokenizer, config.template + secret[:cut], [secret[cut:]])
            prompts.append(bos + start)
            targets.append(rest)
        return cls(plan, bos + head, tails[:n], tails[n:n + k], tails[n + k:], prompts, targets,
                   config.secret_digits * math.log2(10))

    def score(self, model: Any, *, batch_size: int) -> Scores:
        """Every candidate and secret scored by ``model`` in one pass over the shared template."""
        logp = continuation_logprobs(model, self.prefix, [*self.candidates, *self.canaries, *self.audit],
                                     batch_size=batch_size)
        bits = log_perplexity_bits(logp)
        n, k = len(self.candidates), len(self.canaries)
        return Scores(bits[:n], bits[n:n + k], bits[n + k:])


def exposure_metrics(config: MemorizationConfig, secrets: Secrets, scores: Scores) -> dict[str, float]:
    """``privacy/exposure_r{r}`` (skew-normal fit), its spread, and the in-sample rank version, per r."""
    fitted = fitted_exposure(scores.canaries, scores.candidates, space_bits=secrets.space_bits)
    ranked = rank_exposure(scores.canaries, scores.candidates)
    out = {"privacy/exposure_space_bits": secrets.space_bits}
    for r in (0, *config.repetitions):
        chosen = secrets.plan.exposure_repetitions == r
        out[f"privacy/exposure_r{r}"] = float(fitted[chosen].mean())
        out[f"privacy/exposure_r{r}_std"] = float(fitted[chosen].std(ddof=1)) if chosen.sum() > 1 else 0.0
        out[f"privacy/exposure_rank_r{r}"] = float(ranked[chosen].mean())
    return out


def extraction_metrics(model: Any, secrets: Secrets) -> dict[str, float]:
    """``privacy/extraction_r{r}``: the share of canaries whose rest greedy decoding reproduces."""
    hits = greedy_matches(model, secrets.prompts, secrets.targets)
    reps = secrets.plan.exposure_repetitions
    return {f"privacy/extraction_r{r}": float(hits[reps == r].mean()) for r in np.unique(reps)}


def audit_metrics(config: MemorizationConfig, secrets: Secrets, scores: Scores, *, delta: float) -> dict[str, float]:
    """One-run audit (Steinke et al. 2023): guess IN for the likeliest audit canaries, OUT for the least.

    ``delta``: the delta the epsilon lower bound is stated at (the method's; 0 for a non-private run).
    """
    m = config.audit_canaries
    if m == 0:
        return {}
    guesses = config.audit_guesses or max(2, m // 2)  # fixed before any score is seen
    result = audit_scores(-scores.audit, secrets.plan.audit_included, k_in=guesses // 2,
                          k_out=guesses - guesses // 2, delta=delta)
    return result.metrics()
