"""nonprivate: AdamW on the training set with the canaries, no clipping or noise."""

from __future__ import annotations

from typing import Literal

from tasks.memorization.config import METHODS, MemorizationConfig, MemorizationMethod


class NonPrivateConfig(MemorizationConfig):
    method: Literal["nonprivate"] = "nonprivate"


@METHODS.register
class NonPrivate(MemorizationMethod):
    """The family's shared training loop as it is (the hooks' defaults)."""

    Config = NonPrivateConfig
