"""The pruning task: MACs and training FLOPs are counted exactly, the ratio search meets its target
(local and global), pruned models save and reload exactly, the pruned cells start from the unpruned
model's checkpoint and count its training, checkpoints survive corruption, the recipe's schedule
and augmentation do what they say, and the configs say clearly what is wrong.

Real timm FBNetV3 models and real torch-pruning throughout; fbnetv3_b and _d (the smaller ones) keep
the tests quick.
"""

from __future__ import annotations

import io
import logging

import pytest
import torch

from suite.errors import ConfigError
from suite.task import get_task
from tasks.pruning import checkpoints, flops, models
from tasks.pruning.prune import local_macs_at, make_pruner, prune_globally_to, search_ratio
from tasks.pruning.train import learning_rate, random_shift

torch.set_num_threads(1)
TASK = get_task("pruning")


def _importance(criterion: str):
    """A fresh channel score of the method ``criterion`` (its class in tasks/pruning/methods/criteria.py)."""
    return TASK.method_registry.get(criterion)().importance()


def _pruned_b(criterion: str = "magnitude", ratio: float = 0.3, steps: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    model = models.build("fbnetv3_b", 10).eval()
    pruner = make_pruner(model, _importance(criterion), ratio=ratio, steps=steps, resolution=32)
    for _ in range(steps):
        pruner.step()
    return model


class _Tiny(torch.nn.Module):
    """A stem conv, a depthwise conv and a linear head: MACs and FLOPs countable by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dw(self.stem(x)).mean((2, 3)))


def test_macs_and_training_flops_match_a_hand_count_with_a_depthwise_conv() -> None:
    """At 16x16: stem 3*8*9*256, depthwise 8*9*256, head 8*10 MACs. Backward: each half of a layer's
    backward costs its forward; the stem needs no input gradient. (torch's own formula counts the
    depthwise weight gradient 8x too large; flops.py replaces it.)"""
    stem, dw, head = 3 * 8 * 9 * 256, 8 * 9 * 256, 8 * 10
    tiny = _Tiny()
    macs, params = models.macs_and_params(tiny, 16)
    assert macs == stem + dw + head and params == sum(p.numel() for p in tiny.parameters())
    assert flops.per_example(tiny, 16, backward=True) == 2 * (stem + dw + head) + 2 * (stem + 2 * dw + 2 * head)
    assert flops.training(tiny, 16, examples=64) == 64 * flops.per_example(tiny, 16, backward=True)


def test_flop_counting_leaves_gradients_and_batchnorm_statistics_alone() -> None:
    """Taylor importance reads .grad after the FLOPs of its passes are counted."""
    model = models.build("fbnetv3_b", 10).train()
    model.get_classifier().weight.grad = torch.ones_like(model.get_classifier().weight)
    stats = [b.clone() for b in model.buffers()]
    flops.per_example(model, 32, backward=True)
    assert torch.equal(model.get_classifier().weight.grad, torch.ones_like(model.get_classifier().weight))
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers())) and model.training


def test_macs_agree_with_torch_pruning_counter_before_and_after_pruning() -> None:
    """torch-pruning's counter adds conv biases and pooling but skips timm's Linear and BatchNormAct2d;
    on these nets it stays within 0.5% of the multiply-accumulate count."""
    import torch_pruning as tp

    full, pruned = models.build("fbnetv3_b", 10), _pruned_b()
    for model in (full, pruned):
        macs, params = models.macs_and_params(model, 32)
        tp_macs, tp_params = tp.utils.count_ops_and_params(model.eval(), models.example_input(32))
        assert macs == pytest.approx(tp_macs, rel=5e-3) and params == tp_params
    assert models.macs_and_params(pruned, 32)[0] < 0.7 * models.macs_and_params(full, 32)[0]


def test_pruned_model_saves_and_reloads_with_torch_pruning_state_dict_and_same_outputs() -> None:
    import torch_pruning as tp

    pruned = _pruned_b()
    buffer = io.BytesIO()
    torch.save(tp.state_dict(pruned), buffer)
    buffer.seek(0)
    fresh = models.build("fbnetv3_b", 10)  # the unpruned architecture: loading must reshape it
    tp.load_state_dict(fresh, torch.load(buffer, weights_only=False))
    fresh.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(pruned(x), fresh(x))
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in pruned.parameters())


def test_iterative_and_one_shot_pruning_give_the_same_architecture_and_classes() -> None:
    """Local pruning: the ratio alone fixes the channel counts, whatever the criterion and the schedule."""
    one_shot, iterative, random = _pruned_b(), _pruned_b(steps=3), _pruned_b("random")
    shapes = [[tuple(p.shape) for p in m.parameters()] for m in (one_shot, iterative, random)]
    assert shapes[0] == shapes[1] == shapes[2]
    assert one_shot.get_classifier().out_features == 10


def test_ratio_search_meets_the_target_macs_within_tolerance() -> None:
    larger, target = models.build("fbnetv3_d", 10), models.macs_and_params(models.build("fbnetv3_b", 10), 32)[0]
    full = models.macs_and_params(larger, 32)[0]
    ratio, macs = search_ratio(local_macs_at(larger, 32), full, target, tolerance=0.02)
    assert 0 < ratio < 0.5 and abs(macs - target) <= 0.02 * target
    pruned = models.build("fbnetv3_d", 10)
    make_pruner(pruned, _importance("magnitude"), ratio=ratio, steps=1, resolution=32).step()
    assert models.macs_and_params(pruned, 32)[0] == macs  # the search's MACs are the real model's


def test_global_pruning_meets_the_target_and_cuts_layers_unevenly() -> None:
    """Global ranking: the copy returned meets the target; unlike local pruning, layers keep
    different fractions of their channels; the model given is left whole."""
    torch.manual_seed(0)
    larger = models.build("fbnetv3_d", 10).eval()
    target = models.macs_and_params(models.build("fbnetv3_b", 10), 32)[0]
    before = [tuple(p.shape) for p in larger.parameters()]
    pruned, ratio = prune_globally_to(larger, TASK.method_registry.get("magnitude")().importance, target, resolution=32, tolerance=0.02)
    assert abs(models.macs_and_params(pruned, 32)[0] - target) <= 0.02 * target and 0 < ratio < 1
    assert [tuple(p.shape) for p in larger.parameters()] == before
    kept = {m.out_channels / o.out_channels for m, o in zip(pruned.modules(), larger.modules())
            if isinstance(m, torch.nn.Conv2d) and m.groups == 1 and o.out_channels > 16}
    assert len({round(k, 2) for k in kept}) > 3


def test_learning_rate_warms_up_linearly_then_decays_to_zero() -> None:
    lrs = [learning_rate(step, peak=0.1, total=100, warmup=10) for step in range(101)]
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[100] == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(0, peak=0.1, total=100, warmup=0) == pytest.approx(0.1)


def test_a_fine_tuning_replays_the_tail_of_the_training_schedule(monkeypatch) -> None:
    """Learning-rate rewinding: a Trainer started at step 8 of 10 runs two steps, at the schedule's
    last two learning rates, and reports its own progress (1/2, 2/2)."""
    from tasks.pruning.data import Images
    from tasks.pruning.train import Trainer

    torch.manual_seed(0)
    images = Images((torch.randn(32, 3, 8, 8), torch.arange(32) % 10), (torch.randn(4, 3, 8, 8), torch.zeros(4)),
                    10, {})
    config = TASK.resolve("quick", {"batch_size": 16, "warmup_epochs": 1, "channels_last": False})
    seen, lrs = [], []
    trainer = Trainer(config, images, total_steps=10, start=8, seed=0, report=lambda d, n: seen.append((d, n)))
    model = _Tiny()
    step = torch.optim.AdamW.step

    def spy(opt, *args, **kwargs):
        lrs.append(opt.param_groups[0]["lr"])
        return step(opt, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)  # records the learning rate of every step
    trainer.run(model, 10)
    assert seen == [(1, 2), (2, 2)] and trainer.step == 10
    assert lrs == [pytest.approx(learning_rate(s, peak=config.lr, total=10, warmup=2)) for s in (8, 9)]


def test_random_shift_translates_each_image_within_the_bound() -> None:
    x = torch.zeros(16, 3, 12, 12)
    x[:, :, 6, 6] = 1.0  # one bright pixel, away from the edges
    shifted = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape
    rows, cols = (shifted[:, 0] == 1.0).nonzero()[:, 1:].T
    assert len(rows) == 16 and rows.sub(6).abs().max() <= 2 and cols.sub(6).abs().max() <= 2
    assert len({(r, c) for r, c in zip(rows.tolist(), cols.tolist())}) > 1
    assert torch.equal(random_shift(x, 0, torch.Generator()), x)


def test_checkpoint_cache_hits_and_rebuilds_a_truncated_or_mismatched_file(tmp_path, caplog) -> None:
    trainings = []

    def fake_training(model: torch.nn.Module) -> None:  # stands in for SGD: any deterministic change
        trainings.append(1)
        with torch.no_grad():
            model.weight.add_(1.0)

    parts = {"model": "linear", "seed": 0}
    make = lambda: torch.nn.Linear(3, 2)  # noqa: E731
    first = make()
    assert checkpoints.cached_training(first, parts, fake_training, root=tmp_path) is False
    again = make()
    assert checkpoints.cached_training(again, parts, fake_training, root=tmp_path) is True
    assert torch.equal(again.weight, first.weight) and len(trainings) == 1

    path = checkpoints.checkpoint_path(parts, root=tmp_path)
    path.write_bytes(path.read_bytes()[:40])  # truncated
    with caplog.at_level(logging.WARNING):
        assert checkpoints.cached_training(make(), parts, fake_training, root=tmp_path) is False
    assert "unreadable checkpoint" in caplog.text and len(trainings) == 2
    assert checkpoints.load_checked(path, torch.nn.Linear(3, 5)) is None  # shapes differ: not loaded
    assert checkpoints.load_checked(path, make()) is not None


def test_pruned_run_starts_from_the_unpruned_checkpoint_and_counts_its_training(tmp_path, monkeypatch) -> None:
    """The pruned path's cost is the larger model's full training (read from the cache here, still
    counted) plus the fine-tuning; the unpruned cell of the same model and seed trained it."""
    from suite import resolve
    from suite.task import RunContext

    monkeypatch.setenv("SUITE_CACHE", str(tmp_path))
    unpruned = TASK().run(resolve.smoke(TASK, "unpruned"), RunContext(tier="quick"))
    pruned = TASK().run(resolve.smoke(TASK, "magnitude"), RunContext(tier="quick"))
    assert unpruned["compute/checkpoint_cached"] == 0 and pruned["compute/checkpoint_cached"] == 1
    assert pruned["utility/accuracy_pretrained"] == unpruned["utility/accuracy"]
    assert pruned["compute/macs_before_pruning"] == unpruned["compute/macs"]
    assert pruned["compute/finetune_flops"] > 0
    assert pruned["compute/train_flops_total"] == pytest.approx(
        unpruned["compute/train_flops_total"] + pruned["compute/finetune_flops"])
    assert pruned["compute/macs_gap"] <= 0.02 and pruned["compute/macs"] < unpruned["compute/macs"]


@pytest.mark.parametrize("overrides, message", [
    ({"method": "magnitude", "model": "fbnetv3_b", "target": "fbnetv3_b"}, "must be smaller"),
    ({"method": "taylor", "finetune_epochs": 7, "epochs": 6}, "must be at most epochs"),
    ({"method": "magnitude", "finetune_epochs": 0}, "finetune_epochs"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"method": "l1"}, "method"),
    ({"macs_tolerance": 0.0}, "macs_tolerance"),
    # values that would otherwise fail inside the run (BatchNorm on one example; cifar10's size)
    ({"batch_size": 1}, "batch_size"),
    ({"train_subset": 1}, "train_subset"),
    ({"dataset": "cifar10", "resolution": 64}, "cifar10 is 32x32: resolution must be 32"),
    ({"resolution": 100_000}, "resolution"),
])
def test_bad_configs_name_what_is_wrong(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        TASK.resolve("quick", overrides)


PRUNING_KEYS = {"target", "schedule", "iterative_steps", "global_pruning", "finetune_epochs", "macs_tolerance"}


def test_each_method_has_only_the_keys_it_reads() -> None:
    """The tier's pruning defaults do not reach an unpruned config (equal runs hash equally), and
    taylor_batches is Taylor's alone."""
    keys = {name: set(TASK.config_model(name).model_fields) for name in TASK.methods()}
    assert set(TASK.methods()) == {"unpruned", "magnitude", "taylor", "random"}
    assert not keys["unpruned"] & (PRUNING_KEYS | {"taylor_batches"})
    assert all(PRUNING_KEYS <= keys[m] for m in ("magnitude", "taylor", "random"))
    assert keys["taylor"] - keys["magnitude"] == keys["taylor"] - keys["random"] == {"taylor_batches"}
    assert set(TASK.resolve("quick", {"method": "unpruned"}).model_dump()) == keys["unpruned"]


def test_cli_shows_one_methods_keys_and_refuses_a_key_of_another_method(tmp_path) -> None:
    from tests.conftest import suite_cli

    shown = suite_cli("show", "pruning", "--set", "method=unpruned", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "keys of method unpruned" in shown.stdout and "epochs: 10" in shown.stdout
    assert not [k for k in PRUNING_KEYS | {"taylor_batches"} if f"\n{k}:" in shown.stdout]
    refused = suite_cli("run", "pruning", "--set", "method=unpruned", "--set", "target=fbnetv3_d", cwd=tmp_path)
    assert refused.returncode == 2
    assert "key 'target' is not a key of method unpruned; methods that have it: magnitude, random, taylor" \
        in refused.stderr
    assert not (tmp_path / "mlflow.db").exists()  # nothing ran or was written


def test_full_tier_resolves_for_every_grid_cell() -> None:
    from suite.config import expand_grid

    tier = TASK.tier("full")
    assert tier.defaults["dataset"] in ("cifar10", "imagenet")
    cells = [TASK.resolve("full", values) for values in expand_grid(tier.grid)]
    pruned = {(c.model, c.target) for c in cells if c.method != "unpruned"}
    assert pruned == {("fbnetv3_g", "fbnetv3_b"), ("fbnetv3_g", "fbnetv3_d"), ("fbnetv3_d", "fbnetv3_b")}
    assert {c.finetune_epochs / c.epochs for c in cells if c.method != "unpruned"} == {0.2}
    assert all(c.epochs == tier.defaults["epochs"] for c in cells)  # one budget for every model


def test_quick_tier_has_three_seeds_for_each_headline_cell_and_one_budget() -> None:
    from collections import Counter

    from suite.config import expand_grid

    cells = [TASK.resolve("quick", values) for values in expand_grid(TASK.tier("quick").grid)]
    seeds = Counter((c.method, c.model, getattr(c, "schedule", None), getattr(c, "global_pruning", False))
                    for c in cells)
    for headline in (("unpruned", "fbnetv3_b", None, False), ("unpruned", "fbnetv3_g", None, False),
                     ("magnitude", "fbnetv3_g", "one_shot", False)):
        assert seeds[headline] >= 3
    assert {c.epochs for c in cells} == {TASK.tier("quick").defaults["epochs"]}
    assert TASK.resolve("quick").train_subset is None  # all the training digits
    assert {(c.schedule, c.global_pruning) for c in cells if c.method == "magnitude"} >= {
        ("one_shot", False), ("iterative", False), ("one_shot", True)}


def test_cifar10_without_data_says_where_to_put_it(monkeypatch) -> None:
    from tasks.pruning.data import load_images

    monkeypatch.delenv("SUITE_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="data_dir"):
        load_images(TASK.resolve("full", {"dataset": "cifar10", "data_dir": None}))
