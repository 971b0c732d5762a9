"""The memorization family's config and method registry: the keys every method reads.

Imported by the task (``task.py``), by the heavy modules (``run.py``, ``train.py``, ...) and by
each method (``methods/*.py``) alike. A method varies how the model is trained
(:class:`MemorizationMethod`); planting, scoring, variants and measures are the family's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from suite.config import BaseConfig, DeviceChoice
from suite.method import Method, MethodRegistry

if TYPE_CHECKING:
    from tasks.memorization.train import TrainingRecord

SUPPORTED_REPETITIONS = (1, 2, 4, 8, 16, 32, 64, 128)


class MemorizationConfig(DeviceChoice, BaseConfig):
    variant: Literal["fp32", "bf16", "int8", "fp8_rowwise", "pruned50"] = "fp32"  # the trained model as measured
    model: Literal["scratch", "hf_dir"] = "scratch"  # a Llama trained from scratch here, or fine-tune model_dir
    model_dir: str | None = None  # hf_dir: a local Hugging Face Llama directory (weights and tokenizer)
    hidden_size: int = Field(128, ge=8)  # scratch: width of the Llama
    layers: int = Field(4, ge=1)  # scratch: transformer blocks
    heads: int = Field(4, ge=1)  # scratch: attention heads (hidden_size divisible by it)
    intermediate_size: int = Field(512, ge=8)  # scratch: MLP width
    vocab_size: int = Field(1024, ge=300)  # scratch: BPE vocabulary trained on the training text
    train_embeddings: bool = True  # False freezes the token embeddings (and a tied output head)
    held_out_every: int = Field(5, ge=2)  # every n-th pydoc topic (sorted) is held out for perplexity
    seq_len: int = Field(32, ge=8)  # tokens per training example
    corpus_windows: int | None = Field(None, ge=1)  # training-text windows used (evenly spaced); null: all
    template: str = "the secret number is "  # the text in front of every secret
    secret_digits: int = Field(9, ge=2, le=18)  # digits of a secret: the space has 10^digits candidates
    repetitions: list[int] = Field(default_factory=lambda: [1, 4, 16, 64])  # copies of a canary in the training set
    canaries_per_repetition: int = Field(4, ge=1)  # secrets per repetition count (and never-inserted controls)
    candidates: int = Field(10_000, ge=100)  # secrets sampled to rank each canary against (paper: >= 10,000)
    extraction_prompt_digits: int = Field(3, ge=0)  # digits of the secret given after the template when extracting
    audit_canaries: int = Field(100, ge=0)  # one-run audit: secrets each put in once with probability 1/2
    audit_guesses: int | None = Field(None, ge=2)  # audit guesses (half IN, half OUT); default half the canaries
    epochs: int = Field(3, ge=1)  # passes over the training set (expected passes under Poisson sampling)
    batch_size: int = Field(32, ge=1)  # (expected) examples per step; DP sample rate = batch_size / examples
    lr: float = Field(3e-3, gt=0)  # peak AdamW learning rate (linear warm-up, cosine decay to 10%)
    warmup: float = Field(0.05, ge=0, lt=1)  # fraction of the steps spent warming up
    weight_decay: float = Field(0.1, ge=0)  # AdamW weight decay
    eval_tokens: int = Field(8192, ge=16)  # held-out tokens scored for perplexity
    prompt_tokens: int = Field(32, ge=1)  # speed: prompt length
    new_tokens: int = Field(16, ge=2)  # speed: generated tokens
    speed_repeats: int = Field(3, ge=1)  # speed: timed repeats (median) after a warm-up
    score_batch: int = Field(1000, ge=1)  # candidates scored per forward pass

    @model_validator(mode="after")
    def _consistent(self) -> MemorizationConfig:
        if self.model == "hf_dir" and not self.model_dir:
            raise ValueError("model=hf_dir needs model_dir (a local Hugging Face Llama directory)")
        if self.hidden_size % (2 * self.heads):
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by heads ({self.heads}) into "
                             "heads of even width (rotary position embeddings rotate pairs)")
        if self.seq_len <= self.secret_digits + 1 or self.eval_tokens < self.seq_len:
            raise ValueError(f"seq_len ({self.seq_len}) must exceed secret_digits + 1 ({self.secret_digits + 1}) "
                             f"to hold a canary, and eval_tokens ({self.eval_tokens}) must be at least seq_len")
        bad = sorted(set(self.repetitions) - set(SUPPORTED_REPETITIONS))
        if not self.repetitions or bad or sorted(set(self.repetitions)) != self.repetitions:
            raise ValueError(f"repetitions must be increasing distinct values from {SUPPORTED_REPETITIONS} "
                             f"(got {self.repetitions})")
        if self.extraction_prompt_digits >= self.secret_digits:
            raise ValueError(f"extraction_prompt_digits ({self.extraction_prompt_digits}) must be below "
                             f"secret_digits ({self.secret_digits}): something must be left to extract")
        secrets = (len(self.repetitions) + 1) * self.canaries_per_repetition + self.audit_canaries
        if secrets > 10 ** self.extraction_prompt_digits:
            raise ValueError(f"{secrets} secrets (canaries, controls, audit canaries) need distinct extraction "
                             f"prompts, but extraction_prompt_digits={self.extraction_prompt_digits} gives only "
                             f"{10 ** self.extraction_prompt_digits}")
        if self.audit_canaries == 1 or (self.audit_guesses or 0) > self.audit_canaries:
            raise ValueError(f"the audit needs 0 or at least 2 audit_canaries and at most that many audit_guesses "
                             f"(got {self.audit_canaries} canaries, {self.audit_guesses} guesses)")
        if not self.template or self.template != self.template.lstrip():
            raise ValueError("template must be non-empty text that does not start with whitespace")
        return self


METHODS = MethodRegistry(MemorizationConfig, package="tasks.memorization.methods")


@dataclass
class Prepared:
    """What the training loop drives, as the method prepared it (a non-private method: unchanged)."""

    model: Any
    optimizer: Any
    loader: Any
    # The batches of one epoch, as a context manager (DP-SGD may split logical batches into physical ones).
    batches: Callable[[], contextlib.AbstractContextManager[Any]] | None = None
    # (noise multiplier, sample rate) the accountant used after ``steps`` steps; None for a non-private run.
    noise: Callable[[int], tuple[float, float]] | None = None

    def epoch(self) -> contextlib.AbstractContextManager[Any]:
        """The batches of one epoch (the loader itself unless the method splits them)."""
        return self.batches() if self.batches is not None else contextlib.nullcontext(self.loader)


class MemorizationMethod(Method):
    """A memorization method varies how the model is trained; the family's run does the rest.

    Optional hooks (the defaults train non-privately): ``prepare`` (wrap the model, optimizer and
    loader before the training loop), ``privacy_metrics`` (what the trained model's record says
    about privacy) and ``audit_delta`` (the delta the one-run audit's bound is stated at).
    """

    def prepare(self, config: Any, model: Any, optimizer: Any, loader: Any) -> Prepared:
        """The model, optimizer and loader the training loop drives (here: as they are)."""
        return Prepared(model=model, optimizer=optimizer, loader=loader)

    def privacy_metrics(self, config: Any, record: TrainingRecord) -> dict[str, float]:
        """Privacy metrics of the training that ``record`` describes (none for a non-private one)."""
        return {}

    def audit_delta(self, config: Any) -> float:
        """The delta of the one-run audit's epsilon lower bound (0: pure epsilon)."""
        return 0.0
