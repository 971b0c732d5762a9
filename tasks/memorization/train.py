"""Training the family's model: AdamW non-privately, or DP-SGD (DP-AdamW) through Opacus.

Both use the same recipe shape as Llama's pretraining, scaled down: AdamW with betas (0.9, 0.95)
and weight decay 0.1, linear warm-up, cosine decay to 10% of the peak rate; the loss of an
example is its mean next-token cross-entropy, and a batch's loss is the mean over its examples
(the ``mean`` reduction Opacus scales per-example gradients by).

DP-SGD: Poisson sampling with rate batch_size / examples, per-example clipping at
``max_grad_norm``, Gaussian noise calibrated by Opacus to the target epsilon after ``epochs``
(``make_private_with_epsilon``). Per-example gradients come from Opacus' ``hooks`` mode, which
has grad samplers for ``nn.Linear`` and ``nn.Embedding`` and, in Opacus 1.6, computes those of
layers it has none for (``LlamaRMSNorm``'s weight) with functorch, layer by layer; measured on
the quick model (1 thread, 32 x 32 tokens) it costs 2.0x a non-private step, against 3.0x for
``functorch`` on the whole model. Ghost clipping refuses the tied input and output embeddings.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

# Known and harmless here: the suite measures, it does not deploy (secure RNG).
warnings.filterwarnings("ignore", message="Secure RNG turned off")
warnings.filterwarnings("ignore", message="Full backward hook is firing")


@dataclass(frozen=True)
class TrainingRecord:
    """What a training run did: the accountant's inputs, its cost, where its loss ended."""

    steps: int
    examples: int
    noise_multiplier: float | None  # None: non-private
    sample_rate: float | None
    cpu_s: float  # process CPU seconds of the training loop
    final_loss: float  # mean loss of the last epoch's batches

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def build_scratch_model(config: Any, *, vocab_size: int, pad_id: int) -> Any:
    """A freshly initialized LlamaForCausalLM of the config's shape (seeded by the config's seed)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(config.seed)
    shape = LlamaConfig(vocab_size=vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.layers,
                        intermediate_size=config.intermediate_size, num_attention_heads=config.heads,
                        num_key_value_heads=config.heads, max_position_embeddings=max(256, config.seq_len),
                        tie_word_embeddings=True, bos_token_id=None, eos_token_id=pad_id, pad_token_id=pad_id,
                        architectures=["LlamaForCausalLM"])
    return LlamaForCausalLM(shape)


def train_model(model: Any, rows: np.ndarray, config: Any, *,
                progress: Callable[[int, int], None] = lambda d, t: None) -> TrainingRecord:
    """Train ``model`` in place on ``rows`` (examples x tokens) as the config says; return the record."""
    start = time.process_time()
    device = next(model.parameters()).device
    if not config.train_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)  # a tied output head freezes with it
    model.train()
    data = torch.utils.data.TensorDataset(torch.from_numpy(rows))
    loader = torch.utils.data.DataLoader(data, batch_size=config.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(config.seed))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.95), weight_decay=config.weight_decay)
    engine = None
    if config.method == "dpsgd":
        engine, model, optimizer, loader = _make_private(config, model, optimizer, loader)
    total = config.epochs * len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(total, config.warmup))
    steps, losses = 0, []
    for _ in range(config.epochs):
        losses = []
        with _physical_batches(loader, optimizer, config.max_physical_batch if engine else None) as batches:
            for (x,) in batches:
                loss = _step(model, optimizer, x.to(device))
                if loss is not None:
                    losses.append(loss)
                if getattr(optimizer, "_is_last_step_skipped", False):
                    continue  # a physical batch inside a logical one: no step yet
                schedule.step()
                steps += 1
                progress(steps, total)
    sigma = optimizer.noise_multiplier if engine is not None else None
    rate = _sample_rate(engine, loader, sigma, steps) if engine is not None else None
    return TrainingRecord(steps=steps, examples=len(rows), noise_multiplier=sigma, sample_rate=rate,
                          cpu_s=time.process_time() - start, final_loss=float(np.mean(losses)) if losses else math.nan)


def unwrap(model: Any) -> Any:
    """The transformers model inside Opacus' GradSampleModule (or the model itself)."""
    return getattr(model, "_module", model)


def example_losses(model: Any, x: torch.Tensor) -> torch.Tensor:
    """Each row's mean next-token cross-entropy (nats)."""
    logits = model(input_ids=x[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), x[:, 1:], reduction="none").mean(1)


def _step(model: Any, optimizer: Any, x: torch.Tensor) -> float | None:
    optimizer.zero_grad(set_to_none=True)
    if len(x) == 0:
        # Poisson sampling drew an empty batch (probability about e^-batch_size): Opacus still
        # takes the step, noise only, as the accountant counts it.
        optimizer.step()
        return None
    # With physical batches, the loss is the mean over a physical batch; Opacus' "mean" reduction
    # turns it back into per-example gradients, and the step divides their clipped sum by the
    # expected logical batch size.
    loss = example_losses(model, x).mean()
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"training loss is {loss.item()}")
    loss.backward()
    optimizer.step()
    return loss.item()


def _physical_batches(loader: Any, optimizer: Any, size: int | None) -> Any:
    """The loader itself, or Opacus' BatchMemoryManager splitting each logical batch into ``size`` rows."""
    if size is None:
        return contextlib.nullcontext(loader)
    from opacus.utils.batch_memory_manager import BatchMemoryManager

    return BatchMemoryManager(data_loader=loader, max_physical_batch_size=size, optimizer=optimizer)


def _make_private(config: Any, model: Any, optimizer: Any, loader: Any) -> tuple[Any, Any, Any, Any]:
    from opacus import PrivacyEngine

    engine = PrivacyEngine(accountant=config.accountant)
    with warnings.catch_warnings():
        # The calibration's search probes huge noise levels, whose optimal RDP order is the largest.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        model, optimizer, loader = engine.make_private_with_epsilon(
            module=model, optimizer=optimizer, data_loader=loader, target_epsilon=config.epsilon,
            target_delta=config.delta, epochs=config.epochs, max_grad_norm=config.max_grad_norm,
            poisson_sampling=True, grad_sample_mode=config.grad_sample_mode,
            noise_generator=torch.Generator().manual_seed(config.seed + 1))
    return engine, model, optimizer, loader


def _sample_rate(engine: Any, loader: Any, sigma: float, steps: int) -> float:
    """The rate the accountant used, checked against the run: one entry of (sigma, q, steps)."""
    history = engine.accountant.history
    rate = 1.0 / len(loader)
    if sum(h[2] for h in history) != steps or any(h[0] != sigma or h[1] != rate for h in history):
        raise RuntimeError(f"accountant history {history} disagrees with the run (sigma={sigma}, q={rate}, "
                           f"steps={steps})")
    return rate


def _warmup_cosine(total: int, warmup: float) -> Callable[[int], float]:
    """Multiplier of the peak rate at each step: linear warm-up, then cosine decay to 0.1."""
    ramp = max(1, math.ceil(warmup * total))

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        done = (step - ramp) / max(1, total - ramp)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    return factor
