"""Trained models on disk: each (seed, training settings) is trained once and shared by its variant cells.

The key hashes every config value except the ones that only change how the trained model is
measured (``variant`` and the evaluation keys), plus the versions of the libraries that train it.
The file (``torch.save`` of tensors and plain values, written atomically) holds the weights, the
model's shape, the tokenizer a scratch model was trained with, and the training record (steps,
noise, sample rate, CPU seconds) that the other cells need for their epsilon. Cells that need the
same model at once build it under a lock (:func:`suite.cache.build_once`): one trains, the others
wait and read. A file that does not load back as expected is logged and rebuilt.
"""

from __future__ import annotations

import json
import logging
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from suite.cache import build_once, cache_key, cache_root
from tasks.memorization.config import MemorizationConfig
from tasks.memorization.train import TrainingRecord

log = logging.getLogger(__name__)
FAMILY = "memorization"
_FORMAT = 1  # bump when the file's layout changes
# Keys that only change how a trained model is measured, not the model. (extraction_prompt_digits is not
# one: the planted secrets are drawn with distinct first digits, so it changes what is trained on.)
EVAL_ONLY = frozenset({"variant", "candidates", "audit_guesses", "eval_tokens", "prompt_tokens", "new_tokens",
                       "speed_repeats", "score_batch"})


@dataclass
class Trained:
    """A trained model as the cache holds it."""

    state: dict[str, torch.Tensor]
    model_config: dict[str, Any]  # LlamaConfig.to_dict()
    tokenizer_json: str | None  # the scratch model's tokenizer; None: the model directory's
    record: TrainingRecord


def training_key(config: MemorizationConfig) -> dict[str, Any]:
    """What determines the trained model: the config without its evaluation keys, and library versions."""
    import opacus
    import transformers

    values = {k: v for k, v in config.model_dump(mode="json").items() if k not in EVAL_ONLY}
    return {"config": json.dumps(values, sort_keys=True), "format": _FORMAT, "torch": torch.__version__,
            "transformers": transformers.__version__, "opacus": opacus.__version__}


def cached_training(config: MemorizationConfig, train: Callable[[], Trained], *, root: Path | None = None) -> tuple[Trained, bool]:
    """The trained model of ``config``, from the cache or trained now by ``train()``; ``(trained, hit)``."""
    path = (root or cache_root(FAMILY)) / f"{cache_key(training_key(config))}.pt"

    def save(trained: Trained, file: IO[bytes]) -> None:
        torch.save({"state": {k: v.detach().cpu().contiguous() for k, v in trained.state.items()},
                    "model_config": json.dumps(trained.model_config), "tokenizer": trained.tokenizer_json or "",
                    "record": json.dumps(trained.record.to_json())}, file)

    built = build_once(path, load=_load, build=train, save=save)
    return built.value, built.hit


def _load(path: Path) -> Trained | None:
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload.get("state"), dict) or not payload["state"]:
            raise ValueError("no weights")
        return Trained(state=payload["state"], model_config=json.loads(payload["model_config"]),
                       tokenizer_json=payload["tokenizer"] or None,
                       record=TrainingRecord(**json.loads(payload["record"])))
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, AttributeError, EOFError,
            pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        log.warning("ignoring unreadable trained model %s (%s); retraining", path, exc)
        return None
