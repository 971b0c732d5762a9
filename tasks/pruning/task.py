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

from suite.schema import Metric
from suite.task import Task, register_task
from tasks.pruning.claims import CLAIMS
from tasks.pruning.config import METHODS, VERSION, PruningConfig


@register_task("pruning")
class PruningTask(Task):
    description = "FBNetV3 g structurally pruned (torch-pruning) to b's or d's MACs vs b and d trained directly"
    version = VERSION
    Config = PruningConfig  # the keys every method reads; each method's own in tasks/pruning/methods/
    method_registry = METHODS
    preload = ("tasks.pruning.run", "tasks.pruning.finetune", "timm", "torch_pruning", "torch._dynamo",
               "sklearn.datasets", "sklearn.model_selection")
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
