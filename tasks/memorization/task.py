"""Memorization with ground truth: a small Llama trained on planted canaries, then compressed.

Reproduces at small scale "The Secret Sharer" (Carlini et al., 2019) on the variants of "The Llama
3 Herd of Models" (2024): a Llama-architecture LM is trained here on Python's documentation with
random secrets planted in a fixed template, each repeated r times, non-privately or with DP-SGD
(Opacus); each trained model is then measured as fp32, bf16, int8 weight-only, FP8 row-wise and
50% pruned (the llm family's variants, reused): exposure and verbatim extraction of the secrets per
repetition count, perplexity, speed, weight bytes, epsilon and a one-run audit bound.
"""

from __future__ import annotations

from suite.context import RunContext
from suite.schema import Curve, Metric
from suite.task import Task, register_task
from tasks.memorization.config import METHODS, SUPPORTED_REPETITIONS, MemorizationConfig

_ALL_R = (0, *SUPPORTED_REPETITIONS)
_LOG2E = 1.4426950408889634  # expected exposure of a secret the model never saw: rank uniform over the space


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
    version = "2"
    Config = MemorizationConfig
    method_registry = METHODS
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
        """The family's pipeline (``run.py``); the config's method trains the model."""
        from tasks.memorization.run import run_memorization

        return run_memorization(config, ctx, method=self.method_of(config))
