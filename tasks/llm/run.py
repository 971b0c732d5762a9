"""One run of the llm task: load the model, make the variant, measure it."""

from __future__ import annotations

from typing import Any

from suite.examples import digest
from suite.task import RunContext

# Held-out tokens resampled together when two runs are compared token by token: neighbouring
# tokens share context, so single tokens are not independent examples (a block bootstrap).
LOSS_BLOCK = 32


def run_llm(config: Any, ctx: RunContext) -> dict[str, float]:
    from tasks.llm import measure, texts
    from tasks.llm.variants import apply_variant, linear_sparsity, weight_bytes

    with ctx.phase("load"):
        loaded = _load(config)
        model = apply_variant(loaded.model, config.method, fp8_activation_bound=config.fp8_activation_bound,
                              prune_pattern=config.prune_pattern)
        model.to(_device(config.device))
        tokenizer = loaded.tokenizer
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    held_out = encode(texts.held_out_text(held_out_every=config.held_out_every))

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
        speed = measure.measure_speed(model, held_out[:config.prompt_tokens], new_tokens=config.new_tokens,
                                      repeats=config.speed_repeats)
    with ctx.phase("memorization"):
        ctx.progress("memorization", 0, 1)
        licenses = texts.license_texts()
        if not licenses:
            raise RuntimeError("no Apache/MIT/BSD/GPL license text found in the installed packages")
        probes = [encode(t) for t in licenses.values()]
        controls = [encode(texts.shuffle_sentences(t, seed=config.control_seed)) for t in licenses.values()]
        mem = measure.memorization(model, probes, controls, probes_per_text=config.probes_per_text,
                                   prefix=config.prefix_tokens, target=config.target_tokens, seed=config.seed)
    wbytes = weight_bytes(model)
    result = {
        "utility/perplexity": quality.perplexity,
        "utility/next_token_accuracy": quality.next_token_accuracy,
        "compute/prefill_tokens_per_s": speed.prefill_tokens_per_s,
        "compute/decode_tokens_per_s": speed.decode_tokens_per_s,
        "compute/ttft_ms": speed.ttft_ms,
        "compute/weight_bytes": float(wbytes),
        "compute/decode_weight_gb_per_s": wbytes * speed.decode_tokens_per_s / 1e9,
        "compute/linear_sparsity": linear_sparsity(model),
        "compute/model_from_cache": float(loaded.from_cache),
        "compute/speed_emulated": float(config.method == "fp8_rowwise" and not _native_fp8(model)),
        "privacy/memorization_rate": mem.rate,
        "privacy/memorization_control": mem.control_rate,
        "privacy/memorization_excess": mem.rate - mem.control_rate,
        "privacy/memorization_probes": float(mem.probes),
        "privacy/memorization_matched_tokens": mem.matched,
        "privacy/memorization_matched_control": mem.control_matched,
    }
    if config.lm_eval_tasks:
        from tasks.llm.harness import evaluate_harness

        with ctx.phase("lm_eval"):
            ctx.progress("lm-eval", 0, 1)
            scores = evaluate_harness(model, tokenizer, tasks=config.lm_eval_tasks, task_dir=config.lm_eval_dir,
                                      limit=config.lm_eval_limit)
        result["utility/lm_eval_accuracy"] = sum(scores.values()) / len(scores)
    return result


def _load(config: Any) -> Any:
    from tasks.llm.model import load_gguf_cached, load_hf_dir

    if config.model == "hf_dir":
        return load_hf_dir(config.model_dir)
    return load_gguf_cached()


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but torch sees no CUDA device; use device=cpu or auto")
    return name


def _native_fp8(model: Any) -> bool:
    from tasks.llm.fp8 import _scaled_mm_available

    return model.device.type == "cuda" and _scaled_mm_available()
