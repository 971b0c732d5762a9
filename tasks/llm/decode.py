"""Greedy decoding near the memory wall: a static KV cache and one compiled call per token.

Batch-one decoding reads every weight once per token, so its speed is bounded by memory bandwidth.
Eager transformers on this CPU reach about a third of that bound: MKL's matrix-vector products read
weights at about half the bandwidth a streaming reduction gets, and each step runs some 600 small ops
from Python. Here a whole decoding step (embedding row, RoPE row, mask, the 30 decoder layers, final norm,
head, greedy choice) is one function compiled with ``torch.compile``, called once per token; its C++
code reads each weight row in one fused, vectorized reduction, and attention over the static cache is
written out so that it fuses too. The position travels as a tensor, so every token runs the same code.

The layers are one *nested compile region* (``torch.compiler.nested_compile_region``): traced and
compiled once, then called 30 times with their own weights inside the token's graph. Unrolling them instead
costs minutes of CPU to compile (transformers' ``StaticCache`` path over the whole model) and calling a
compiled layer 30 times from Python, as this module did before, cost about 1.5 ms a token in dynamo's guards
and wrappers, some 8% of a fp32 token. The graph is cached on disk by inductor (under the suite's cache, see
:func:`inductor_cache_dir`), so later cells of the sweep load it.

Supported: Llama-architecture models (SmolLM2, Llama 3.x) whose blocks hold plain ``nn.Linear`` weights
without bias: the fp32, bf16 and pruned variants. :func:`unsupported_reason` says why another model is
not (the int8 and FP8 variants' quantized linears), and the caller decodes it eagerly instead. The tokens
equal those of the eager model (a test compares them); only the order of floating-point sums differs.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from suite.cache import cache_key, cache_root, file_lock

_PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def inductor_cache_dir() -> str:
    """Where compiled kernels are kept: ``$TORCHINDUCTOR_CACHE_DIR`` if a user chose one, else the suite's llm cache.

    Under ``SUITE_CACHE`` the compile cache is emptied with the rest of the suite's cache, so a cold sweep pays
    for compiling and a warm one does not, as it should be measured. Inductor writes its own default into the
    variable the first time anything asks for its cache directory (a sweep's fork server importing inductor
    does), so that default counts as no choice.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not chosen or os.path.abspath(chosen) == os.path.abspath(default_cache_dir()):
        chosen = str(cache_root("llm") / "inductor")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = chosen
    return chosen


def compile_ahead(model: Any, prompt: Sequence[int], new_tokens: int) -> bool:
    """Compile the decoding step of ``model`` for a batch-one ``prompt`` and ``new_tokens`` now, unless another
    process is compiling the same step; returns whether this one did (or found it in the disk cache).

    The step depends on the model's shapes and dtype, not on its weights' values, so a run whose variant keeps
    both (pruning) can compile it from the loaded model before making the variant. A sweep's first two such cells
    would otherwise compile the same step side by side: here the second finds the first's lock, goes on with its
    variant, and by the time it decodes, the step is in inductor's disk cache (or in this process's, for the one
    that compiled it). Either way the tokens and the timed decoding are those of the compiled step.
    """
    with file_lock(compile_lock(model, len(prompt), new_tokens), wait=False) as mine:
        if mine:
            device = model.model.embed_tokens.weight.device
            CompiledDecoder(model).greedy(torch.tensor([list(prompt)], device=device), new_tokens)
        return mine


def compile_lock(model: Any, prompt_tokens: int, new_tokens: int) -> Path:
    """The lock :func:`compile_ahead` holds while it compiles this step: one per shape, dtype and cache dir."""
    config = model.config
    weight = model.model.embed_tokens.weight
    key = cache_key({"torch": torch.__version__, "model_type": config.model_type, "hidden": config.hidden_size,
                     "layers": config.num_hidden_layers, "heads": config.num_attention_heads,
                     "kv_heads": config.num_key_value_heads, "intermediate": config.intermediate_size,
                     "vocab": config.vocab_size, "dtype": str(weight.dtype), "device": weight.device.type,
                     "prompt": prompt_tokens, "new_tokens": new_tokens})
    return Path(inductor_cache_dir()) / "suite-compiling" / f"decode-{key[:16]}"


def unsupported_reason(model: Any) -> str | None:
    """None when :class:`CompiledDecoder` can run ``model``; otherwise why not."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "llama":
        return f"not a Llama-architecture model ({getattr(config, 'model_type', None)})"
    if getattr(config, "hidden_act", None) != "silu":
        return f"activation {config.hidden_act} (the compiled step is SwiGLU)"
    for i, layer in enumerate(model.model.layers):
        for name in _PROJECTIONS:
            module = layer.get_submodule(name)
            weight = getattr(module, "weight", None)
            if type(module) is not nn.Linear or module.bias is not None or type(weight.data) is not torch.Tensor:
                kind = f"{type(weight.data).__name__} weight" if type(module) is nn.Linear else type(module).__name__
                return f"layers.{i}.{name} is not a plain bias-free linear layer ({kind}: a quantized variant)"
    return None


class CompiledDecoder:
    """Greedy continuation of ``model`` (a supported Llama) with a static KV cache and a compiled token step.

    >>> decoder = CompiledDecoder(model)                      # doctest: +SKIP
    >>> tokens, prefill_s, decode_s = decoder.greedy(prompts, 16)   # doctest: +SKIP
    """

    def __init__(self, model: Any) -> None:
        reason = unsupported_reason(model)
        if reason:
            raise ValueError(f"CompiledDecoder cannot run this model: {reason}")
        inductor_cache_dir()
        import torch._inductor.config as inductor

        inductor.compile_threads = 1  # compile in this process, so the cell's CPU time includes it
        self.model = model
        config = model.config
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.layers = [_layer_weights(layer) for layer in model.model.layers]
        self.step = torch.compile(_token_step, dynamic=False, fullgraph=True)

    @torch.inference_mode()
    def greedy(self, prompts: torch.Tensor, new_tokens: int, *,
               busy_s: list[float] | None = None) -> tuple[torch.Tensor, float, float]:
        """Like :func:`tasks.llm.measure.greedy`: (tokens [B, new_tokens], prefill s, decode s), ``busy_s``.

        The prompt runs through the eager model (prefill); its KV cache is copied into static buffers
        of the final length, and every later token is one call of the compiled step.
        """
        from tasks.llm.clock import busy_clock, spans, stamp

        model = self.model
        prompts = prompts.to(model.device)
        batch, length = prompts.shape
        clock = busy_clock(prompts.device)
        start = stamp(prompts, clock)
        out = model(input_ids=prompts, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        first = stamp(token, clock)
        size = length + new_tokens
        caches = self._static_caches(out.cache, batch, size)
        cos, sin = self._rope_tables(size)
        step = functools.partial(self.step, cos=cos, sin=sin, caches=caches, layers=self.layers,
                                 embed=model.model.embed_tokens.weight, norm=model.model.norm.weight,
                                 head=model.lm_head.weight, heads=self.heads, kv_heads=self.kv_heads, eps=self.eps)
        positions = [torch.tensor([p], device=token.device) for p in range(length, size - 1)]
        generated = [token]
        for i, position in enumerate(positions):
            # The first step checks the compiled code's guards (and compiles it for a new shape); the later ones pass
            # tensors of the same shapes, dtypes and devices, so their guards would pass too: skipping them saves some
            # 0.2 ms a token. Should one ever need a recompilation, the stance raises rather than run stale code.
            with torch.compiler.set_stance("default", skip_guard_eval_unsafe=i > 0):
                token = step(token, position)
            generated.append(token)
        end = stamp(token, clock)
        return torch.cat(generated, dim=1), *spans(start, first, end, busy_s)

    def _rope_tables(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's own RoPE (scaling included) for every position of the cache, (size, head_dim) each: a
        table computed once per sequence, from which each token's step picks its row."""
        model = self.model
        like = model.model.embed_tokens.weight[:1][None]  # the model's dtype and device
        cos, sin = model.model.rotary_emb(like, torch.arange(size, device=like.device)[None])
        return cos[0], sin[0]

    def _static_caches(self, cache: Any, batch: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for layer in cache.layers:
            keys = layer.keys.new_zeros(batch, self.kv_heads, size, self.head_dim)
            values = torch.zeros_like(keys)
            keys[:, :, :layer.keys.shape[2]] = layer.keys
            values[:, :, :layer.values.shape[2]] = layer.values
            out.append((keys, values))
        return out

    @property
    def eps(self) -> float:
        return float(self.model.config.rms_norm_eps)


def _layer_weights(layer: nn.Module) -> tuple[torch.Tensor, ...]:
    attn, mlp = layer.self_attn, layer.mlp
    return (layer.input_layernorm.weight, attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight,
            attn.o_proj.weight, layer.post_attention_layernorm.weight, mlp.gate_proj.weight, mlp.up_proj.weight,
            mlp.down_proj.weight)


def _matvec(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight)`` for a few rows ``x``, written as a product-and-sum that inductor fuses into one
    streaming pass over ``weight`` (float32 accumulation, like the eager bf16 matmul). Only under compile:
    run eagerly it would materialize the product."""
    return (x.float().unsqueeze(-2) * weight.float()).sum(-1).to(x.dtype)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm, operation for operation."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def _attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Attention of one query per row over the static cache (grouped-query heads), in float32 like the CPU's SDPA
    kernel. Written out rather than calling SDPA so that inductor fuses it into the step's own loops: the extern
    SDPA call cost about 2 ms of a bf16 token's 12 (30 calls) on this CPU."""
    batch, heads, _, head_dim = q.shape
    kv_heads, size = keys.shape[1], keys.shape[2]
    q = q.float().view(batch, kv_heads, heads // kv_heads, 1, head_dim)
    scores = (q * keys.float()[:, :, None]).sum(-1) * head_dim ** -0.5  # (batch, kv_heads, group, size)
    scores = scores.masked_fill(~visible.view(1, 1, 1, size), float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    out = (weights[..., None] * values.float()[:, :, None]).sum(-2)  # (batch, kv_heads, group, head_dim)
    return out.view(batch, heads, 1, head_dim).to(keys.dtype)


def _layer_step(hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, visible: torch.Tensor,
                slot: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, ln1: torch.Tensor, wq: torch.Tensor,
                wk: torch.Tensor, wv: torch.Tensor, wo: torch.Tensor, ln2: torch.Tensor, wg: torch.Tensor,
                wu: torch.Tensor, wd: torch.Tensor, *, heads: int, kv_heads: int, eps: float) -> torch.Tensor:
    """One Llama decoder layer for one new token per row: attention over the static cache, then SwiGLU."""
    batch, head_dim = hidden.shape[0], keys.shape[-1]
    x = _rms_norm(hidden, ln1, eps)
    q = _rotate(_matvec(x, wq).view(batch, heads, 1, head_dim), cos, sin)
    k = _rotate(_matvec(x, wk).view(batch, kv_heads, 1, head_dim), cos, sin)
    keys.index_copy_(2, slot, k)
    values.index_copy_(2, slot, _matvec(x, wv).view(batch, kv_heads, 1, head_dim))
    attn = _attend(q, keys, values, visible)
    hidden = hidden + _matvec(attn.reshape(batch, heads * head_dim), wo)
    x = _rms_norm(hidden, ln2, eps)
    return hidden + _matvec(F.silu(_matvec(x, wg)) * _matvec(x, wu), wd)


def _token_step(token: torch.Tensor, position: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, caches: list,
                layers: list, embed: torch.Tensor, norm: torch.Tensor, head: torch.Tensor, *, heads: int,
                kv_heads: int, eps: float) -> torch.Tensor:
    """One decoding step of the whole model: the next token of each row (batch, 1) from the last (batch, 1), at
    ``position`` (a one-element tensor, so that every position runs the same compiled code)."""
    hidden = embed.index_select(0, token.view(-1))
    size = caches[0][0].shape[2]
    rows = (1, 1, 1, cos.shape[-1])
    cos, sin = cos.index_select(0, position).view(rows), sin.index_select(0, position).view(rows)
    visible = (torch.arange(size, device=token.device) <= position).view(1, 1, 1, size)
    for weights, (keys, values) in zip(layers, caches):
        hidden = _layer(hidden, cos, sin, visible, position, keys, values, *weights, heads=heads, kv_heads=kv_heads,
                        eps=eps)
    return _matvec(_rms_norm(hidden, norm, eps), head).argmax(-1, keepdim=True)


# The 30 layers share one compiled body: traced and compiled once, called once per layer inside the token's graph.
_layer = torch.compiler.nested_compile_region(_layer_step)
