"""Training the family's model: the loop every method shares, AdamW with a Llama-style schedule.

The recipe is Llama's pretraining shape, scaled down: AdamW with betas (0.9, 0.95) and weight
decay 0.1, linear warm-up, cosine decay to 10% of the peak rate; the loss of an example is its
mean next-token cross-entropy, and a batch's loss is the mean over its examples (the ``mean``
reduction Opacus scales per-example gradients by). The method's ``prepare`` wraps the model,
optimizer and loader before the loop (DP-SGD: Opacus, ``methods/dpsgd.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from tasks.memorization.config import MemorizationConfig, MemorizationMethod


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


def build_scratch_model(config: MemorizationConfig, *, vocab_size: int, pad_id: int) -> Any:
    """A freshly initialized LlamaForCausalLM of the config's shape (seeded by the config's seed)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(config.seed)
    shape = LlamaConfig(vocab_size=vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.layers,
                        intermediate_size=config.intermediate_size, num_attention_heads=config.heads,
                        num_key_value_heads=config.heads, max_position_embeddings=max(256, config.seq_len),
                        tie_word_embeddings=True, bos_token_id=None, eos_token_id=pad_id, pad_token_id=pad_id,
                        architectures=["LlamaForCausalLM"])
    return LlamaForCausalLM(shape)


def train_model(model: Any, rows: np.ndarray, config: MemorizationConfig, *, method: MemorizationMethod,
                progress: Callable[[int, int], None] = lambda d, t: None) -> TrainingRecord:
    """Train ``model`` in place on ``rows`` (examples x tokens) as the config and its method say."""
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
    run = method.prepare(config, model, optimizer, loader)
    total = config.epochs * len(run.loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(run.optimizer, _warmup_cosine(total, config.warmup))
    steps, losses = 0, []
    for _ in range(config.epochs):
        losses = []
        with run.epoch() as batches:
            for (x,) in batches:
                loss = _step(run.model, run.optimizer, x.to(device))
                if loss is not None:
                    losses.append(loss)
                if getattr(run.optimizer, "_is_last_step_skipped", False):
                    continue  # a physical batch inside a logical one: no step yet
                schedule.step()
                steps += 1
                progress(steps, total)
    sigma, rate = run.noise(steps) if run.noise is not None else (None, None)
    return TrainingRecord(steps=steps, examples=len(rows), noise_multiplier=sigma, sample_rate=rate,
                          cpu_s=time.process_time() - start, final_loss=float(np.mean(losses)) if losses else math.nan)


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


def _warmup_cosine(total: int, warmup: float) -> Callable[[int], float]:
    """Multiplier of the peak rate at each step: linear warm-up, then cosine decay to 0.1."""
    ramp = max(1, math.ceil(warmup * total))

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        done = (step - ramp) / max(1, total - ramp)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    return factor
