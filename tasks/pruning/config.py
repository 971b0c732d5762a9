"""The pruning family's base config (the keys every method reads: model, data, training recipe,
measurement) and its method registry (the methods' common class is in ``methods/base.py``).

Imported by the task (``task.py``), by the methods (``methods/``) and by the heavy modules
(``run.py``, ``train.py``, ...) alike; it imports only light libraries.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from suite.config import BaseConfig, DataLocation, DeviceChoice
from suite.method import MethodRegistry

VERSION = "4"  # the task's version; also part of a trained checkpoint's cache key (4: the faster convolutions
# of tasks/pruning/fastconv.py and fused AdamW change trained weights by float rounding)
FBNETS = ("fbnetv3_b", "fbnetv3_d", "fbnetv3_g")  # smallest first


class PruningConfig(DataLocation, DeviceChoice, BaseConfig):
    model: Literal["fbnetv3_b", "fbnetv3_d", "fbnetv3_g"] = "fbnetv3_g"  # the model trained (and pruned)
    dataset: Literal["digits", "cifar10", "imagenet"] = "digits"  # digits is offline; the others read data_dir
    resolution: int = Field(32, ge=8, le=512)  # input side in pixels (digits are upsampled from 8x8)
    split_seed: int = Field(0, ge=0)  # fixes the train / test split of digits, independent of seed
    train_subset: int | None = Field(None, ge=2)  # use only the first N training examples (BatchNorm needs 2)
    test_subset: int | None = Field(None, gt=0)  # evaluate on the first N test examples
    epochs: int = Field(6, ge=1)  # from-scratch budget of every model (a pruned model's pretraining included)
    batch_size: int = Field(64, ge=2)  # minibatch size (BatchNorm cannot train on one example)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # sgd: momentum 0.9, nesterov
    lr: float = Field(0.05, gt=0)  # peak learning rate (of the training and of the fine-tuning)
    warmup_epochs: float = Field(0.0, ge=0)  # linear warm-up to lr, then cosine decay to zero
    weight_decay: float = Field(5e-5, ge=0)  # L2 penalty (not on norms and biases)
    label_smoothing: float = Field(0.1, ge=0, lt=1)  # cross-entropy label smoothing
    random_shift: int = Field(0, ge=0)  # augmentation: random translation by up to N pixels (pad and crop)
    bn_recalibration_batches: int = Field(10, ge=0)  # BatchNorm statistics re-estimated after training on N batches
    pretrained: bool = False  # start from timm's ImageNet weights (must be in the local timm/HF cache)
    latency_repeats: int = Field(20, ge=1)  # timed forward passes per batch size (median reported)
    channels_last: bool = True  # NHWC memory format for training and inference (faster convs on CPU)

    @model_validator(mode="after")
    def _data_fits_the_model(self) -> PruningConfig:
        if self.dataset == "cifar10" and self.resolution != 32:
            raise ValueError(f"dataset cifar10 is 32x32: resolution must be 32 (got {self.resolution})")
        return self


METHODS = MethodRegistry(PruningConfig, package="tasks.pruning.methods")
