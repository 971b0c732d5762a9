"""One run of the llm task: load the model, make the variant, measure its quality, speed and size."""

from __future__ import annotations

import statistics
from typing import Any

from suite.context import RunContext
from suite.examples import digest
from tasks.llm.config import LLMConfig, Variant

# Held-out tokens resampled together when two runs are compared token by token: neighbouring
# tokens share context, so single tokens are not independent examples (a block bootstrap).
LOSS_BLOCK = 32


def run_llm(config: LLMConfig, ctx: RunContext, variant: Variant) -> dict[str, float]:
    """Load the model, make ``variant`` of it (the config's method), measure its quality, speed and size."""
    from tasks.llm import measure
    from tasks.llm.variants import linear_sparsity, weight_bytes

    loaded, model, calibration, held_out = _make_variant(config, ctx, variant)
    with ctx.phase("eval"):
        quality = measure.evaluate_quality(
            model, held_out, context=config.context, max_tokens=config.eval_tokens,
            progress=lambda d, t: ctx.progress("perplexity", d, t))
    scored = digest(quality.targets)  # the same held-out tokens, in the same order, for every variant
    ctx.record_example_values("utility/perplexity", values=quality.token_losses, examples=scored, transform="exp",
                              block=LOSS_BLOCK)
    ctx.record_example_values("utility/next_token_accuracy", values=quality.token_correct, examples=scored,
                              block=LOSS_BLOCK)
    with ctx.phase("speed"):
        ctx.progress("speed", 0, 1)
        # The bandwidth probe runs right after each timed repeat, in this process and with its threads: the
        # same concurrency as the decoding it bounds (in a sweep, the other cell runs on the other core).
        speed = measure.measure_speed(model, held_out[:config.prompt_tokens], new_tokens=config.new_tokens,
                                      repeats=config.speed_repeats, compiled=config.decode == "compiled",
                                      probe_bandwidth=True)
    result = {
        "utility/perplexity": quality.perplexity,
        "utility/next_token_accuracy": quality.next_token_accuracy,
        **_speed_metrics(speed, model),
        "compute/model_bytes": float(weight_bytes(model)),
        "compute/linear_sparsity": linear_sparsity(model),
        "compute/model_from_cache": float(loaded.from_cache),
        "compute/speed_emulated": float(variant.speed_emulated(model)),
    }
    if calibration is not None:
        result["compute/calibration_tokens"] = float(calibration.numel())
    if config.lm_eval_tasks:
        from tasks.llm.harness import evaluate_harness

        with ctx.phase("lm_eval"):
            ctx.progress("lm-eval", 0, 1)
            scores = evaluate_harness(model, loaded.tokenizer, tasks=config.lm_eval_tasks,
                                      task_dir=config.lm_eval_dir, limit=config.lm_eval_limit)
        result["utility/lm_eval_accuracy"] = sum(scores.values()) / len(scores)
    return result


def _make_variant(config: LLMConfig, ctx: RunContext, variant: Variant) -> tuple[Any, Any, Any, list[int]]:
    """The loaded model (with its tokenizer), the variant made of it, its calibration batch (or None), and the
    held-out token ids."""
    from suite.device import resolve_device
    from tasks.llm import texts

    with ctx.phase("load"):
        loaded = _load(config)
        model = loaded.model.to(resolve_device(config.device))
    held_out = _encode(loaded.tokenizer, texts.held_out_text(held_out_every=config.held_out_every))
    if config.decode == "compiled" and variant.decodes_as_loaded:
        from tasks.llm.decode import compile_ahead, unsupported_reason

        if unsupported_reason(model) is None:
            with ctx.phase("compile"):
                ctx.progress("compile", 0, 1)
                compile_ahead(model, held_out[:config.prompt_tokens], config.new_tokens)
    with ctx.phase("variant"):
        calibration = variant.calibration(config, lambda text: _encode(loaded.tokenizer, text))
        model = variant.apply(model, config, calibration=calibration)
    return loaded, model, calibration, held_out


def _speed_metrics(speed: Any, model: Any) -> dict[str, float]:
    from tasks.llm.variants import decode_bytes_per_token

    per_token = decode_bytes_per_token(model)
    bandwidth = statistics.median(speed.read_gb_per_s)
    return {
        "compute/prefill_tokens_per_s": speed.prefill_tokens_per_s,
        "compute/decode_tokens_per_s": speed.decode_tokens_per_s,
        "compute/decode_tokens_per_cpu_s": speed.decode_tokens_per_busy_s,
        "compute/ttft_ms": speed.ttft_ms,
        "compute/decode_bytes_per_token": float(per_token),
        "compute/memory_read_gb_per_s": bandwidth,
        "compute/decode_bound_tokens_per_s": bandwidth * 1e9 / per_token,
        "compute/decode_of_bound": speed.decode_of_bound(per_token),
        "compute/decode_compiled": float(speed.compiled),
    }


def _encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _load(config: LLMConfig) -> Any:
    from tasks.llm.model import load_gguf_cached, load_hf_dir

    if config.model == "hf_dir":
        return load_hf_dir(config.model_dir)
    return load_gguf_cached()
