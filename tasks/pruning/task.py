"""Pruned compact ConvNets: FBNetV3 b/d/g (timm) unpruned vs a larger one pruned to a smaller one's MACs.

Reproduces at small scale "Pruning Compact ConvNets for Efficient Inference" (Ghosh, Prasad, Dai,
Zhang, Wu, Cormode, Vajda, 2023): a *trained* larger NAS-found FBNetV3 is structurally pruned down
to the compute of a smaller one and fine-tuned briefly, and compared with the smaller one trained
directly. Every model is trained from scratch with one recipe and one budget (``epochs``); the
pruned path is that training of the larger model (shared through the cache) plus pruning plus
``finetune_epochs`` of the same recipe. Two comparisons follow from the logged metrics: at equal
inference MACs (the paper's claim) and at equal total training compute
(``compute/train_flops_total``, the cost side). Channels are removed with torch-pruning's dependency
graph (which keeps SE blocks, depthwise convolutions and residual additions consistent); the
pruning ratio is searched so that the pruned model's MACs match the target model's within
``macs_tolerance``.
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
    global_pruning: bool = False  # pruning: rank channels across layers (torch-pruning's global), else per layer
    dataset: Literal["digits", "cifar10", "imagenet"] = "digits"  # digits is offline; the others read data_dir
    data_dir: str | None = None  # local data for cifar10 (torchvision files) or imagenet (train/ and val/ folders)
    download: bool = False  # let torchvision download cifar10 when the network allows
    resolution: int = Field(32, ge=8, le=512)  # input side in pixels (digits are upsampled from 8x8)
    split_seed: int = Field(0, ge=0)  # fixes the train / test split of digits, independent of seed
    train_subset: int | None = Field(None, ge=2)  # use only the first N training examples (BatchNorm needs 2)
    test_subset: int | None = Field(None, gt=0)  # evaluate on the first N test examples
    epochs: int = Field(6, ge=1)  # from-scratch budget of every model (a pruned model's pretraining included)
    finetune_epochs: float | None = Field(1.0, gt=0)  # pruning: fine-tuning replays the schedule's last N epochs
    batch_size: int = Field(64, ge=2)  # minibatch size (BatchNorm cannot train on one example)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # sgd: momentum 0.9, nesterov
    lr: float = Field(0.05, gt=0)  # peak learning rate (of the training and of the fine-tuning)
    warmup_epochs: float = Field(0.0, ge=0)  # linear warm-up to lr, then cosine decay to zero
    weight_decay: float = Field(5e-5, ge=0)  # L2 penalty (not on norms and biases)
    label_smoothing: float = Field(0.1, ge=0, lt=1)  # cross-entropy label smoothing
    random_shift: int = Field(0, ge=0)  # augmentation: random translation by up to N pixels (pad and crop)
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
        """An unpruned run has no target, schedule or fine-tuning: reset them so equal runs hash equally."""
        if not isinstance(values, dict):
            return values
        values = {**values, "epsilon": None, "delta": None}
        if values.get("method", "magnitude") == "unpruned":
            values.update(target=None, schedule=None, finetune_epochs=None, global_pruning=False)
        if values.get("method", "magnitude") == "unpruned" or values.get("schedule", "one_shot") != "iterative":
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
        if self.target is None or self.schedule is None or self.finetune_epochs is None:
            raise ValueError(f"method {self.method} needs target, schedule and finetune_epochs (got null)")
        if FBNETS.index(self.target) >= FBNETS.index(self.model):
            raise ValueError(f"target {self.target} must be smaller than model {self.model} "
                             f"(order: {', '.join(FBNETS)})")
        if self.finetune_epochs > self.epochs:
            raise ValueError(f"finetune_epochs ({self.finetune_epochs}) must be at most epochs ({self.epochs}): "
                             "the fine-tuning replays the last finetune_epochs of the training schedule")
        return self


@register_task("pruning")
class PruningTask(Task):
    description = "FBNetV3 g structurally pruned (torch-pruning) to b's or d's MACs vs b and d trained directly"
    version = "2"
    Config = PruningConfig
    preload = ("tasks.pruning.run", "timm", "torch_pruning", "torch._dynamo", "sklearn.datasets",
               "sklearn.model_selection")
    pareto = (("compute/macs", "utility/accuracy"), ("compute/train_flops_total", "utility/accuracy"),
              ("compute/latency_ms_b1", "utility/accuracy"), ("compute/latency_ms_b32", "utility/accuracy"))
    claims = CLAIMS  # the paper's claims, judged by `suite claims` (tasks/pruning/claims.py)
    metrics = {
        "utility/accuracy": Metric("higher", "fraction", "test accuracy of the final (pruned and fine-tuned) model"),
        "utility/loss": Metric("lower", "nats", "test cross-entropy of the final model"),
        "utility/accuracy_before_finetune": Metric("higher", "fraction", "pruning (one-shot): test accuracy right "
                                                   "after pruning, BatchNorm statistics re-estimated"),
        "utility/accuracy_pretrained": Metric("higher", "fraction", "pruning: test accuracy before pruning"),
        "compute/macs": Metric("lower", "MAC", "multiply-accumulates of one example's forward pass: convolutions "
                               "and matrix products only (PyTorch's FLOP counter / 2; norms, activations and "
                               "pooling not counted)"),
        "compute/inference_flops": Metric("lower", "FLOP", "forward FLOPs of one example (PyTorch's FLOP counter, "
                                          "2 per multiply-accumulate)"),
        "compute/params": Metric("lower", "count", "parameters of the final model"),
        "compute/model_bytes": Metric("lower", "bytes", "parameters and buffers of the final model"),
        "compute/latency_ms_b1": Metric("lower", "ms", "CPU forward latency at batch 1 (median after warm-up)"),
        "compute/latency_ms_b32": Metric("lower", "ms", "CPU forward latency at batch 32 (median after warm-up)"),
        "compute/latency_threads": Metric("none", "threads", "torch threads the latency was measured with"),
        "compute/train_flops_total": Metric("lower", "FLOP", "training FLOPs of the whole path: the from-scratch "
                                            "training (for a pruned model, the larger model's, even when read "
                                            "from the cache) plus pruning's gradient passes and the fine-tuning; "
                                            "forward and backward of convolutions and matrix products, the "
                                            "optimizer's update not counted"),
        "compute/finetune_flops": Metric("lower", "FLOP", "pruning: the part of train_flops_total spent after the "
                                         "pretraining (Taylor's gradient passes, fine-tuning, BatchNorm "
                                         "recalibration)"),
        "compute/target_macs": Metric("none", "MAC", "pruning: MACs of the target model"),
        "compute/macs_gap": Metric("lower", "fraction", "pruning: |MACs - target MACs| / target MACs"),
        "compute/pruning_ratio": Metric("none", "fraction", "pruning: channel fraction removed (local: from every "
                                        "layer; global: of all prunable channels)"),
        "compute/macs_before_pruning": Metric("none", "MAC", "pruning: MACs of the model that was pruned"),
        "compute/epochs": Metric("none", "epochs", "training epochs in all (pretraining + fine-tuning for pruned "
                                 "runs)"),
        "compute/checkpoint_cached": Metric("none", "flag", "1 when the trained (or pretrained) checkpoint came "
                                            "from the on-disk cache; train_s / pretrain_s and cpu_s then exclude "
                                            "its training, train_flops_total does not"),
    }

    def run(self, config: PruningConfig, ctx: RunContext) -> dict[str, float]:
        from tasks.pruning.run import run

        return run(config, ctx)
