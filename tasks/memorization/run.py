"""One cell of the memorization family: the trained model (cached), its variant, and every measure."""

from __future__ import annotations

from typing import Any

from suite.context import RunContext
from suite.device import resolve_device
from tasks.memorization import canaries as planting
from tasks.memorization import corpus
from tasks.memorization.config import MemorizationConfig, MemorizationMethod
from tasks.memorization.measure import Secrets, audit_metrics, exposure_metrics, extraction_metrics
from tasks.memorization.store import Trained, cached_training


def run_memorization(config: MemorizationConfig, ctx: RunContext, *, method: MemorizationMethod) -> dict[str, float]:
    """One cell: train ``config``'s model with ``method`` (or read it from the cache), apply the variant, measure.

    >>> task = get_task("memorization")   # doctest: +SKIP
    >>> run_memorization(config, RunContext(tier="quick"), method=task().method_of(config))
    """
    from tasks.llm import measure
    from tasks.llm.variants import apply_variant, weight_bytes

    plan = _plan(config)
    with ctx.phase("train"):  # training, or waiting for another cell's training and reading it
        trained, hit = cached_training(config, lambda: _train(config, plan, ctx, method))
    with ctx.phase("load"):
        model, tokenizer = _instantiate(config, trained)
        params = sum(p.numel() for p in model.parameters())
        model = apply_variant(model, config.variant).to(resolve_device(config.device))
    secrets = Secrets.make(config, tokenizer, plan)
    with ctx.phase("exposure"):
        ctx.progress("exposure", 0, 1)
        scores = secrets.score(model, batch_size=config.score_batch)
    metrics = {**exposure_metrics(config, secrets, scores),
               **audit_metrics(config, secrets, scores, delta=method.audit_delta(config))}
    with ctx.phase("extraction"):
        metrics.update(extraction_metrics(model, secrets))
    _, held = corpus.split_topics(held_out_every=config.held_out_every)
    held_ids = corpus.encode(tokenizer, ["\n\n".join(held)])[0]
    with ctx.phase("eval"):
        quality = measure.evaluate_quality(model, held_ids, context=config.seq_len, max_tokens=config.eval_tokens,
                                           progress=lambda d, t: ctx.progress("perplexity", d, t))
    with ctx.phase("speed"):
        speed = measure.measure_speed(model, held_ids[:config.prompt_tokens], new_tokens=config.new_tokens,
                                      repeats=config.speed_repeats)
    metrics.update({
        "utility/perplexity": quality.perplexity, "utility/next_token_accuracy": quality.next_token_accuracy,
        "compute/model_bytes": float(weight_bytes(model)), "compute/params": float(params),
        "compute/train_examples": float(trained.record.examples), "compute/train_cpu_s": trained.record.cpu_s,
        "compute/model_cached": float(hit), "compute/prefill_tokens_per_s": speed.prefill_tokens_per_s,
        "compute/decode_tokens_per_s": speed.decode_tokens_per_s, "compute/ttft_ms": speed.ttft_ms,
        # torchao's int8 weight-only and the FP8 row-wise layers dequantize on every call on a CPU.
        "compute/speed_emulated": float(config.variant in ("int8", "fp8_rowwise") and model.device.type == "cpu"),
    })
    metrics.update(method.privacy_metrics(config, trained.record))
    return metrics


def _plan(config: MemorizationConfig) -> planting.CanaryPlan:
    return planting.draw_plan(seed=config.seed, repetitions=tuple(config.repetitions),
                              per_repetition=config.canaries_per_repetition, audit_canaries=config.audit_canaries,
                              digits=config.secret_digits, prompt_digits=config.extraction_prompt_digits)


def _train(config: MemorizationConfig, plan: planting.CanaryPlan, ctx: RunContext,
           method: MemorizationMethod) -> Trained:
    """Tokenizer (scratch), training set with the canaries, model, training: what the cache stores."""
    import dataclasses
    import time

    from tasks.memorization.train import build_scratch_model, train_model

    start = time.process_time()
    train_texts, _ = corpus.split_topics(held_out_every=config.held_out_every)
    if config.model == "scratch":
        tokenizer = corpus.train_tokenizer(train_texts, vocab_size=config.vocab_size)
        model = build_scratch_model(config, vocab_size=len(tokenizer), pad_id=tokenizer.eos_token_id)
    else:
        tokenizer, model = _pretrained(config.model_dir)
    rows = corpus.training_rows(plan=plan, template=config.template, tokenizer=tokenizer, texts=train_texts,
                                seq_len=config.seq_len, corpus_count=config.corpus_windows, seed=config.seed)
    model.to(resolve_device(config.device))
    record = train_model(model, rows, config, method=method, progress=lambda d, t: ctx.progress("training", d, t))
    record = dataclasses.replace(record, cpu_s=time.process_time() - start)  # the tokenizer and data too
    return Trained(state=model.state_dict(), model_config=model.config.to_dict(),
                   tokenizer_json=tokenizer.backend_tokenizer.to_str() if config.model == "scratch" else None,
                   record=record)


def _instantiate(config: MemorizationConfig, trained: Trained) -> tuple[Any, Any]:
    """The trained float32 model in eval mode, and its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    shape = AutoConfig.for_model(**trained.model_config)
    model = AutoModelForCausalLM.from_config(shape)
    model.load_state_dict(trained.state)
    model.eval()
    if trained.tokenizer_json is not None:
        return model, corpus.tokenizer_from_json(trained.tokenizer_json)
    return model, AutoTokenizer.from_pretrained(config.model_dir)


def _pretrained(model_dir: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir,
                                                                                          dtype="float32")
