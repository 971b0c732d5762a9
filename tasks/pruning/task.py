"""Pruned compact ConvNets: FBNetV3 b/d/g (timm) unpruned vs a larger one pruned to a smaller one's MACs.

Reproduces at small scale "Pruning Compact ConvNets for Efficient Inference" (Ghosh, Prasad, Dai,
Zhang, Wu, Cormode, Vajda, 2023): structurally pruning a larger NAS-found FBNetV3 down to the
compute of a smaller one, then fine-tuning, against training the smaller one directly, with the
same number of training epochs. Channels are removed with torch-pruning's dependency graph (which
keeps SE blocks, depthwise convolutions and residual additions consistent); the pruning ratio is
searched so that the pruned model's MACs match the target model's within ``macs_tolerance``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from suite.config import TaskConfig
from suite.schema import Metric
from suite.task import RunContext, Task, register_task
from tasks.pruning.claims import CLAIMS

CRITERIA = ("magnitude", "taylor", "random")
FBNETS = ("fbnetv3_b", "fbnetv3_d", "fbnetv3_g")


class PruningConfig(TaskConfig):
    method: Literal["unpruned", "magnitude", "taylor", "random"] = "magnitude"  # unpruned, or the importance criterion
    model: Literal["fbnetv3_b", "fbnetv3_d", "fbnetv3_g"] = "fbnetv3_g"  # the model trained (and pruned)
    target: Literal["fbnetv3_b", "fbnetv3_d"] | None = "fbnetv3_b"  # pruning: whose MACs the pruned model matches
    schedule: Literal["one_shot", "iterative"] | None = "one_shot"  # pruning: all at once, or in steps
    iterative_steps: int = Field(3, ge=2)  # iterative: pruning steps, spread over the fine-tuning
    dataset: Literal["digits", "cifar10", "imagenet"] = "digits"  # digits is offline; the others read data_dir
    data_dir: str | None = None  # local data for cifar10 (torchvision files) or imagenet (train/ and val/ folders)
    download: bool = False  # let torchvision download cifar10 when the network allows
    resolution: int = Field(32, ge=32, le=512)  # input side in pixels (digits are upsampled from 8x8)
    split_seed: int = Field(0, ge=0)  # fixes the train / test split of digits, independent of seed
    train_subset: int | None = Field(None, ge=2)  # use only the first N training examples (BatchNorm needs 2)
    test_subset: int | None = Field(None, gt=0)  # evaluate on the first N test examples
    epochs: int = Field(6, ge=1)  # training budget: epochs of an unpruned model = pretrain + fine-tune of a pruned one
    pretrain_epochs: int | None = Field(3, ge=1)  # pruning: epochs the larger model trains before it is pruned
    batch_size: int = Field(64, ge=2)  # minibatch size (BatchNorm cannot train on one example)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # sgd: momentum 0.9, nesterov; both with cosine decay
    lr: float = Field(0.05, gt=0)  # peak learning rate
    weight_decay: float = Field(5e-5, ge=0)  # L2 penalty
    bn_recalibration_batches: int = Field(10, ge=0)  # BatchNorm statistics re-estimated after training on N batches
    pretrained: bool = False  # start from timm's ImageNet weights (must be in the local timm/HF cache)
    taylor_batches: int = Field(4, ge=1)  # taylor: minibatches whose gradients score the channels
    macs_tolerance: float = Field(0.02, gt=0, lt=1)  # pruning: allowed relative MACs gap to the target
    latency_repeats: int = Field(20, ge=1)  # timed forward passes per batch size (median reported)
    channels_last: bool = True  # NHWC memory format for training and inference (faster convs on CPU)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where training runs; latency is always measured on CPU

    @model_validator(mode="before")
    @classmethod
    def _pruning_keys_follow_method(cls, values: Any) -> Any:
        """An unpruned run has no target, schedule or pretraining: reset them so equal runs hash equally."""
        if not isinstance(values, dict):
            return values
        values = {**values, "epsilon": None, "delta": None}
        if values.get("method", "magnitude") == "unpruned":
            values.update(target=None, schedule=None, pretrain_epochs=None)
        elif values.get("schedule", "one_shot") != "iterative":
            values["iterative_steps"] = 3
        return values

    @model_validator(mode="after")
    def _data_fits_the_model(self) -> PruningConfig:
        if self.dataset == "cifar10" and self.resolution != 32:
            raise ValueError(f"dataset cifar10 is 32x32: resolution must be 32 (got {self.resolution})")
        return self

    @model_validator(mode="after")
    def _pruning_needs_a_smaller_target(self) -> PruningConfig:
        if self.method == "unpruned":
            return self
        if self.target is None or self.schedule is None or self.pretrain_epochs is None:
            raise ValueError(f"method {self.method} needs target, schedule and pretrain_epochs (got null)")
        if FBNETS.index(self.target) >= FBNETS.index(self.model):
            raise ValueError(f"target {self.target} must be smaller than model {self.model} "
                             f"(order: {', '.join(FBNETS)})")
        if self.pretrain_epochs >= self.epochs:
            raise ValueError(f"pretrain_epochs ({self.pretrain_epochs}) must be below epochs ({self.epochs}): "
                             "the rest of the budget is the fine-tuning")
        return self


@register_task("pruning")
class PruningTask(Task):
    description = "FBNetV3 g structurally pruned (torch-pruning) to b's or d's MACs vs b and d trained directly"
    version = "1"
    Config = PruningConfig
    preload = ("tasks.pruning.run", "timm", "torch_pruning", "torch._dynamo", "sklearn.datasets",
               "sklearn.model_selection")
    pareto = (("compute/macs", "utility/accuracy"), ("compute/latency_ms_b1", "utility/accuracy"),
              ("compute/latency_ms_b32", "utility/accuracy"))
    claims = CLAIMS  # the paper's claims, judged by `suite claims` (tasks/pruning/claims.py)
    metrics = {
        "utility/accuracy": Metric("higher", "fraction", "test accuracy of the final (pruned and fine-tuned) model"),
        "utility/loss": Metric("lower", "nats", "test cross-entropy of the final model"),
        "utility/accuracy_before_finetune": Metric("higher", "fraction", "pruning: test accuracy right after pruning"),
        "utility/accuracy_pretrained": Metric("higher", "fraction", "pruning: test accuracy before pruning"),
        "compute/macs": Metric("lower", "MAC", "multiply-accumulates of one forward pass (torch-pruning's counter)"),
        "compute/inference_flops": Metric("lower", "FLOP", "forward FLOPs of one example (PyTorch's FLOP counter)"),
        "compute/params": Metric("lower", "count", "parameters of the final model"),
        "compute/model_bytes": Metric("lower", "bytes", "parameters and buffers"),
        "compute/latency_ms_b1": Metric("lower", "ms", "CPU forward latency at batch 1 (median after warm-up)"),
        "compute/latency_ms_b32": Metric("lower", "ms", "CPU forward latency at batch 32 (median after warm-up)"),
        "compute/latency_threads": Metric("none", "threads", "torch threads the latency was measured with"),
        "compute/target_macs": Metric("none", "MAC", "pruning: MACs of the target model"),
        "compute/macs_gap": Metric("lower", "fraction", "pruning: |MACs - target MACs| / target MACs"),
        "compute/pruning_ratio": Metric("none", "fraction", "pruning: per-layer channel ratio found by the search"),
        "compute/macs_before_pruning": Metric("none", "MAC", "pruning: MACs of the model that was pruned"),
        "compute/epochs": Metric("none", "epochs", "training epochs in all (pretrain + fine-tune for pruned runs)"),
        "compute/checkpoint_cached": Metric("none", "flag", "1 when the trained (or pretrained) checkpoint came "
                                            "from the on-disk cache; train_s / pretrain_s then exclude it"),
    }

    def run(self, config: PruningConfig, ctx: RunContext) -> dict[str, float]:
        from tasks.pruning.run import run

        return run(config, ctx)
