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

from suite.schema import Metric
from suite.task import RunContext, Task, register_task
from tasks.llm.claims import CLAIMS
from tasks.llm.config import METHODS, QUICK_MODEL, LLMConfig

_SPEED = "greedy, batch of one, fixed prompt; median of repeats after a warm-up"
_EMULATED = " (1 in compute/speed_emulated: the variant's matmuls were emulated, so this speed is not its own)"


@register_task("llm")
class LLMTask(Task):
    description = ("Llama-architecture LM variants fp32/bf16/int8/FP8-rowwise and 50% magnitude/Wanda pruning: "
                   "perplexity, decode speed against the memory-read bound, memory. Quick tier: SmolLM2-135M-Instruct "
                   "Q4_1, so its fp32 row is fp32 weights dequantized from Q4_1, not a full-precision model")
    version = "5"  # 5: compiled decode is one call per token (speed figures moved; tokens and quality did not)
    Config = LLMConfig
    method_registry = METHODS
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

        return run_llm(config, ctx, self.method_of(config))

    def tags(self, config: LLMConfig) -> dict[str, str]:
        tags = super().tags(config)
        tags["llm.weights"] = ("fp32 weights dequantized from Q4_1 (SmolLM2-135M-Instruct GGUF)"
                               if config.model == QUICK_MODEL else "the hf_dir checkpoint as stored")
        return {**tags, **self.method_of(config).tags(config)}
