"""Which secrets are planted, how often, and which candidates they are ranked against (pure, from the seed).

Every secret is a string of ``digits`` decimal digits after one template, e.g. "the secret number
is 318442907". Three kinds share the template:

* exposure canaries: ``per_repetition`` secrets for each repetition count r, each put into the
  training set r times (r training examples);
* controls: ``per_repetition`` secrets never put in (r = 0): what exposure and extraction read
  on a secret the model has not seen, measured on the same model;
* audit canaries (one-run audit, Steinke et al. 2023): each put in once with probability 1/2.

All secrets differ in their first ``prompt_digits`` digits, so that each has its own extraction
prompt (the template plus those digits). The candidates that exposure ranks a canary against are
drawn uniformly from all 10^digits secrets, with replacement, from their own stream of the seed.

>>> plan = draw_plan(seed=0, repetitions=(1, 4), per_repetition=2, audit_canaries=4, digits=6, prompt_digits=2)
>>> plan.exposure_repetitions.tolist(), int(plan.audit_included.size)
([0, 0, 1, 1, 4, 4], 4)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Independent random streams of one seed: canaries, candidates, filler text.
_CANARY_STREAM, _CANDIDATE_STREAM = 1, 2


@dataclass(frozen=True)
class CanaryPlan:
    """The planted secrets of one seed (rows of digits, each row one secret)."""

    exposure_secrets: np.ndarray  # (k, digits) int: controls first, then by repetition count
    exposure_repetitions: np.ndarray  # (k,) int: times each is in the training set (0: a control)
    audit_secrets: np.ndarray  # (m, digits) int
    audit_included: np.ndarray  # (m,) bool: in the training set once, with probability 1/2

    def training_copies(self) -> list[tuple[np.ndarray, int]]:
        """(secret, copies) of every secret that goes into the training set."""
        planted = [(s, int(r)) for s, r in zip(self.exposure_secrets, self.exposure_repetitions) if r > 0]
        return planted + [(s, 1) for s, keep in zip(self.audit_secrets, self.audit_included) if keep]


def draw_plan(*, seed: int, repetitions: tuple[int, ...], per_repetition: int, audit_canaries: int, digits: int,
              prompt_digits: int) -> CanaryPlan:
    """Draw the secrets of ``seed``: controls, exposure canaries per repetition count, audit canaries."""
    counts = (0, *repetitions)
    total = len(counts) * per_repetition + audit_canaries
    if total > 10 ** prompt_digits:
        raise ValueError(f"{total} secrets need distinct first {prompt_digits} digits, but there are only "
                         f"{10 ** prompt_digits} such prefixes")
    rng = np.random.default_rng([seed, _CANARY_STREAM])
    prompts = rng.choice(10 ** prompt_digits, size=total, replace=False)
    secrets = np.concatenate([_to_digits(prompts, prompt_digits),
                              rng.integers(0, 10, size=(total, digits - prompt_digits))], axis=1)
    k = len(counts) * per_repetition
    return CanaryPlan(exposure_secrets=secrets[:k], exposure_repetitions=np.repeat(counts, per_repetition),
                      audit_secrets=secrets[k:], audit_included=rng.random(audit_canaries) < 0.5)


def sample_candidates(*, seed: int, count: int, digits: int) -> np.ndarray:
    """``count`` secrets drawn uniformly from all 10^digits, with replacement: (count, digits) int."""
    return np.random.default_rng([seed, _CANDIDATE_STREAM]).integers(0, 10, size=(count, digits))


def secret_text(secret: np.ndarray) -> str:
    """The secret as it appears in the text: its digits, e.g. "318442907"."""
    return "".join(str(int(d)) for d in secret)


def _to_digits(numbers: np.ndarray, width: int) -> np.ndarray:
    """Each number as ``width`` decimal digits, most significant first."""
    powers = 10 ** np.arange(width - 1, -1, -1)
    return (numbers[:, None] // powers) % 10
