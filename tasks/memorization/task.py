"""Memorization with ground truth: a small Llama trained on planted canaries, then compressed.

Reproduces at small scale "The Secret Sharer" (Carlini et al., 2019) on the variants of "The Llama
3 Herd of Models" (2024): a Llama-architecture LM is trained here on Python's documentation with
random secrets planted in a fixed template, each repeated r times, non-privately or with DP-SGD
(Opacus); each trained model is then measured as fp32, bf16, int8 weight-only, FP8 row-wise and
50% pruned (the llm family's variants, reused): exposure and verbatim extraction of the secrets per
repetition count, perplexity, speed, weight bytes, epsilon and a one-run audit bound.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from suite.config import TaskConfig
from suite.schema import Curve, Metric
from suite.task import RunContext, Task, register_task

SUPPORTED_REPETITIONS = (1, 2, 4, 8, 16, 32, 64, 128)
_DP_KEYS = ("epsilon", "delta", "max_grad_norm", "accountant", "grad_sample_mode")
_DP_OPTIONAL = ("max_physical_batch",)
_ALL_R = (0, *SUPPORTED_REPETITIONS)
_LOG2E = 1.4426950408889634  # expected exposure of a secret the model never saw: rank uniform over the space


class MemorizationConfig(TaskConfig):
    method: Literal["nonprivate", "dpsgd"] = "nonprivate"  # how the model is trained
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
    max_grad_norm: float | None = Field(1.0, gt=0)  # dpsgd: per-example clipping bound C
    max_physical_batch: int | None = Field(None, ge=1)  # dpsgd: split logical batches to fit memory (Opacus)
    accountant: Literal["rdp", "prv"] | None = "rdp"  # dpsgd: calibrates the noise and reports privacy/epsilon
    grad_sample_mode: Literal["hooks", "functorch"] | None = "hooks"  # dpsgd: how Opacus gets per-example grads
    eval_tokens: int = Field(8192, ge=16)  # held-out tokens scored for perplexity
    prompt_tokens: int = Field(32, ge=1)  # speed: prompt length
    new_tokens: int = Field(16, ge=2)  # speed: generated tokens
    speed_repeats: int = Field(3, ge=1)  # speed: timed repeats (median) after a warm-up
    score_batch: int = Field(1000, ge=1)  # candidates scored per forward pass
    device: Literal["cpu", "cuda", "auto"] = "cpu"  # auto picks cuda when available

    @model_validator(mode="before")
    @classmethod
    def _privacy_keys_follow_method(cls, values: Any) -> Any:
        """Non-private runs have no privacy keys: reset them so that equal computations hash equally."""
        if isinstance(values, dict) and values.get("method", "nonprivate") == "nonprivate":
            values = {**values, **{k: None for k in (*_DP_KEYS, *_DP_OPTIONAL)}}
        return values

    @model_validator(mode="after")
    def _consistent(self) -> MemorizationConfig:
        if self.method == "dpsgd":
            missing = [k for k in _DP_KEYS if getattr(self, k) is None]
            if missing:
                raise ValueError(f"method dpsgd needs {', '.join(missing)} (got null)")
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


def _per_r(name: str, direction: str, unit: str, text: str) -> dict[str, Metric]:
    return {f"privacy/{name}_r{r}": Metric(direction, unit, text.format(r=r) + _R0 * (r == 0),
                                           per_privacy_unit=False) for r in _ALL_R}


_R0 = " (r = 0: secrets never put in the training set, the chance level)"
_EXPOSURE = ("mean exposure of the canaries repeated {r} times: log2 of the candidate space minus log2 of the "
             "rank, the rank extrapolated by a skew-normal fit to the sampled candidates (Carlini et al. 2019, "
             "section 4.3), capped at log2 of the space")
_EMULATED = " (int8 and fp8_rowwise on a CPU dequantize on every call: not a real low-precision speed)"


@register_task("memorization")
class MemorizationTask(Task):
    description = ("A small Llama trained on planted canaries, non-private or DP-SGD, then fp32/bf16/int8/FP8/"
                   "pruned: exposure and extraction of the secrets per repetition count (The Secret Sharer)")
    version = "1"
    Config = MemorizationConfig
    preload = ("tasks.memorization.run", "tasks.memorization.train", "tasks.memorization.score", "transformers",
               "transformers.models.llama.modeling_llama", "opacus", "torchao.quantization", "scipy.stats",
               "tokenizers")
    pareto = (("compute/model_bytes", "utility/perplexity"), ("privacy/epsilon", "utility/perplexity"))
    curves = (
        Curve("exposure", "exposure vs repetitions", "repetitions r of the canary in the training set",
              "exposure [bits] (skew-normal fit)", tuple((r, f"privacy/exposure_r{r}") for r in _ALL_R), "symlog",
              "Mean exposure of the canaries at each repetition count; r = 0: secrets never trained on "
              "(about 1.44 bits is chance). A canary repeated r times is r examples: DP's guarantee for it is "
              "that of a group of r.", guides=((_LOG2E, "chance: a secret never trained on (log2 e)"),)),
        Curve("exposure_rank", "exposure vs repetitions, rank in the sample",
              "repetitions r of the canary in the training set", "exposure [bits] (rank among the candidates)",
              tuple((r, f"privacy/exposure_rank_r{r}") for r in _ALL_R), "symlog",
              "The same from the canary's rank among the sampled candidates: exact up to sampling, but capped "
              "at log2(candidates + 1).", guides=((_LOG2E, "chance: a secret never trained on (log2 e)"),)),
        Curve("extraction", "extraction vs repetitions", "repetitions r of the canary in the training set",
              "fraction of canaries extracted", tuple((r, f"privacy/extraction_r{r}") for r in _ALL_R), "symlog",
              "Greedy decoding from the template and the secret's first digits reproduces the rest verbatim."),
    )
    notes = (
        "Group privacy: a canary repeated r times is r training examples, so example-level (epsilon, delta)-DP "
        "protects it only as a group of r: its guarantee is about (r * epsilon, r * e^((r - 1) * epsilon) * delta) "
        "(at r = 64 and epsilon = 1, no meaningful bound). Low exposure of the r = 64 canaries under DP-SGD is "
        "an empirical finding, not a consequence of the guarantee.",
    )
    metrics = {
        "utility/perplexity": Metric("lower", "ppl", "perplexity on the held-out pydoc topics"),
        "utility/next_token_accuracy": Metric("higher", "fraction", "top-1 next-token accuracy on the same text"),
        **_per_r("exposure", "lower", "bits", _EXPOSURE),
        **{f"privacy/exposure_r{r}_std": Metric("none", "bits", f"standard deviation of exposure over the canaries "
                                                 f"repeated {r} times", per_privacy_unit=False) for r in _ALL_R},
        **_per_r("exposure_rank", "lower", "bits", "mean exposure of the canaries repeated {r} times from their "
                 "rank among the sampled candidates (ceiling log2(candidates + 1))"),
        **_per_r("extraction", "lower", "fraction", "canaries repeated {r} times whose greedy continuation of the "
                 "template and their first digits is the rest of the secret, verbatim"),
        "privacy/exposure_space_bits": Metric("none", "bits", "log2 of the number of possible secrets: the "
                                              "largest exposure", per_privacy_unit=False),
        "privacy/epsilon": Metric("lower", "epsilon", "accountant's epsilon for the run's noise, sample rate and steps"),
        "privacy/epsilon_rdp": Metric("lower", "epsilon", "the same by Opacus' RDP accountant"),
        "privacy/epsilon_prv": Metric("lower", "epsilon", "the same by Opacus' PRV accountant"),
        "privacy/epsilon_pld": Metric("lower", "epsilon", "the same by dp-accounting's PLD accountant"),
        "privacy/delta": Metric("none", "delta", "delta at which epsilon is reported"),
        "privacy/noise_multiplier": Metric("none", "sigma", "Gaussian noise std / clipping bound"),
        "privacy/sample_rate": Metric("none", "q", "Poisson sampling rate the accountant used"),
        "privacy/steps": Metric("none", "steps", "optimizer steps taken"),
        "privacy/max_grad_norm": Metric("none", "C", "per-example clipping bound"),
        "privacy/audit_epsilon_lb": Metric("none", "epsilon", "one-run audit: epsilon lower bound at 95% confidence "
                                           "(Steinke et al. 2023) from secrets put in once with probability 1/2"),
        "privacy/audit_canaries": Metric("none", "count", "one-run audit: canaries"),
        "privacy/audit_guesses": Metric("none", "count", "one-run audit: membership guesses made"),
        "privacy/audit_correct": Metric("none", "count", "one-run audit: correct membership guesses"),
        "compute/model_bytes": Metric("lower", "bytes", "parameters and buffers as stored (tied weights once)"),
        "compute/params": Metric("none", "count", "parameters of the trained model"),
        "compute/train_examples": Metric("none", "count", "training examples (text windows and canary copies)"),
        "compute/train_cpu_s": Metric("lower", "s", "CPU seconds the model's training took (in the cell that "
                                      "trained it; the other variants read it from the cache)"),
        "compute/model_cached": Metric("none", "flag", "1 when this cell read the trained model from the cache"),
        "compute/prefill_tokens_per_s": Metric("higher", "tokens/s", "prompt tokens per second, batch of one"
                                               + _EMULATED),
        "compute/decode_tokens_per_s": Metric("higher", "tokens/s", "generated tokens per second, batch of one"
                                              + _EMULATED),
        "compute/ttft_ms": Metric("lower", "ms", "time to first token, batch of one" + _EMULATED),
        "compute/speed_emulated": Metric("none", "flag", "1 when the speed figures are of emulated low-precision "
                                         "matmuls"),
    }

    def run(self, config: MemorizationConfig, ctx: RunContext) -> dict[str, float]:
        from tasks.memorization.run import run_memorization

        return run_memorization(config, ctx)

    def privacy_unit(self, config: MemorizationConfig) -> str:
        return "example" if config.method == "dpsgd" else "none"

    def accountant(self, config: MemorizationConfig) -> str:
        return config.accountant or "none"

    def tags(self, config: MemorizationConfig) -> dict[str, str]:
        tags = super().tags(config)
        if config.method == "dpsgd":
            tags["privacy.sampler"] = "poisson"
        return tags
