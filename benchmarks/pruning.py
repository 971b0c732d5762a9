"""Figures of the pruning quick tier: the sweep's table from a store, and the recipe's learning curve.

    .venv/bin/python -m benchmarks.pruning [--store URI] [--tier quick]
    .venv/bin/python -m benchmarks.pruning curve [--set key=value ...]
    .venv/bin/python -m benchmarks.pruning control [--set key=value ...]
    .venv/bin/python -m benchmarks.pruning step [--steps N]

``table`` (the default): per cell (model, method, schedule, local/global) the seeds, test accuracy
(mean ± sample std over seeds), MACs, CPU latency at batch 1, total training FLOPs (pretraining
included) and CPU seconds (mean, and summed over the cells: the grid's CPU cost, each model/seed
trained once); then the paper's comparison: g pruned to b's MACs against b, paired by seed, at
equal inference MACs, with the ratio of their total training FLOPs.

``curve``: trains one model with the tier's recipe (``--set`` overrides, e.g. ``model=fbnetv3_b
epochs=10``) on one thread and prints its test and training accuracy after each epoch (BatchNorm
recalibrated on a copy, as after training) and the training's CPU seconds: the measurements the
quick tier's recipe was chosen from. Nothing is cached or logged.

``control``: the fine-tuning of a pruned run applied to the *unpruned* trained model (read from the
checkpoint cache, or trained and cached): its test accuracy before and after. A fine-tuning that
lowers it measures its own damage, not the pruning's.

``step``: CPU milliseconds per training step (batch 128, 32x32, channels_last, one thread) of b, d
and g, before and after the training's speed-ups (``tasks/pruning/fastconv.py``'s convolutions
and fused AdamW), the two variants' steps interleaved in one process so that a loaded
machine slows both alike; median over ``--steps``.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict


def _cell(p: dict[str, str]) -> str:
    if p["method"] == "unpruned":
        return f"{p['model']} unpruned"
    spread = "global" if p.get("global_pruning", "").lower() == "true" else "local"
    return f"{p['model']}->{p['target']} {p['method']} {p['schedule']} {spread}"


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def table(uri: str | None, tier: str = "quick") -> None:
    from suite.tracking import Tracker

    cells: dict[str, dict[int, dict]] = defaultdict(dict)
    for run in Tracker(uri).runs("pruning", status="FINISHED"):
        if run.tags.get("suite.tier") == tier:
            cells[_cell(run.params)][int(run.params["seed"])] = run.metrics
    if not cells:
        print(f"no finished pruning runs of the {tier} tier in the store")
        return
    print(f"{'cell':48} {'seeds':>5} {'accuracy':>16} {'MMACs':>7} {'lat b1 ms':>9} {'train GFLOPs':>12} {'cpu s':>7}")
    total_cpu = 0.0
    for name in sorted(cells, key=lambda n: ("unpruned" not in n, n)):
        rows = list(cells[name].values())
        acc, spread = _mean_std([m["utility/accuracy"] for m in rows])
        cpu = [m["compute/cpu_s"] for m in rows]
        total_cpu += sum(cpu)
        print(f"{name:48} {len(rows):5d} {acc:8.4f} ± {spread:.4f} "
              f"{statistics.mean(m['compute/macs'] for m in rows) / 1e6:7.2f} "
              f"{statistics.mean(m['compute/latency_ms_b1'] for m in rows):9.2f} "
              f"{statistics.mean(m['compute/train_flops_total'] for m in rows) / 1e9:12.0f} "
              f"{statistics.mean(cpu):7.1f}")
    print(f"\nCPU seconds summed over the cells: {total_cpu:.0f}")
    _paired(cells, "fbnetv3_g->fbnetv3_b magnitude one_shot local", "fbnetv3_b unpruned")


def _paired(cells: dict[str, dict[int, dict]], pruned: str, base: str) -> None:
    seeds = sorted(set(cells.get(pruned, {})) & set(cells.get(base, {})))
    if not seeds:
        return
    diffs = [cells[pruned][s]["utility/accuracy"] - cells[base][s]["utility/accuracy"] for s in seeds]
    flops = [cells[pruned][s]["compute/train_flops_total"] / cells[base][s]["compute/train_flops_total"]
             for s in seeds]
    macs = [cells[pruned][s]["compute/macs"] / cells[base][s]["compute/macs"] for s in seeds]
    mean, spread = _mean_std(diffs)
    print(f"\n{pruned} minus {base}, paired by seed {seeds}: accuracy "
          + ", ".join(f"{d:+.4f}" for d in diffs) + f" (mean {mean:+.4f} ± {spread:.4f}); "
          f"MACs ratio {statistics.mean(macs):.3f}; total training FLOPs ratio {statistics.mean(flops):.2f}")


def curve(overrides: dict[str, str]) -> None:
    import copy
    import time

    import torch

    from suite.task import get_task
    from tasks.pruning import models
    from tasks.pruning.data import load_images
    from tasks.pruning.train import Trainer, evaluate, recalibrate_batchnorm, steps_per_epoch

    torch.set_num_threads(1)
    config = get_task("pruning").resolve("quick", {"method": "unpruned", **overrides})
    torch.manual_seed(config.seed)
    images = load_images(config)
    model = models.build(config.model, images.n_classes)
    per_epoch = steps_per_epoch(images, config.batch_size)
    torch.manual_seed(config.seed)
    trainer = Trainer(config, images, total_steps=config.epochs * per_epoch, seed=config.seed)
    on_train = copy.copy(images)
    on_train.test = images.train
    cpu = 0.0
    for epoch in range(1, config.epochs + 1):
        start = time.process_time()
        trainer.run(model, epoch * per_epoch)
        cpu += time.process_time() - start
        probe = copy.deepcopy(model)
        recalibrate_batchnorm(probe, images, config, seed=config.seed)
        test, train = (evaluate(probe, s, config)["utility/accuracy"] for s in (images, on_train))
        print(f"epoch {epoch:3d}  test {test:.3f}  train {train:.3f}  training cpu {cpu:6.1f} s", flush=True)


def control(overrides: dict[str, str]) -> None:
    import torch

    from suite.task import RunContext, get_task
    from tasks.pruning import models
    from tasks.pruning.data import load_images
    from tasks.pruning.run import trained
    from tasks.pruning.train import Trainer, evaluate, recalibrate_batchnorm, steps_for

    torch.set_num_threads(1)
    config = get_task("pruning").resolve("quick", {"method": "magnitude", **overrides})
    images = load_images(config)
    torch.manual_seed(config.seed)
    model = models.build(config.model, images.n_classes)
    schedule = steps_for(config.epochs, images, config.batch_size)
    trained(model, config, images, steps=schedule, ctx=RunContext(tier="quick"))
    before = evaluate(model, images, config)["utility/accuracy"]
    start = schedule - min(schedule, steps_for(config.finetune_epochs, images, config.batch_size))
    Trainer(config, images, total_steps=schedule, start=start, seed=config.seed + 1).run(model, schedule)
    recalibrate_batchnorm(model, images, config, seed=config.seed + 1)
    after = evaluate(model, images, config)["utility/accuracy"]
    print(f"{config.model} seed {config.seed}: test accuracy {before:.4f} trained, {after:.4f} after the "
          f"fine-tuning of a pruned run (steps {start}..{schedule} of the schedule), unpruned")


def step(steps: int) -> None:
    import contextlib
    import copy
    import time

    import torch
    import torch.nn.functional as F

    from tasks.pruning import models
    from tasks.pruning.fastconv import fast_convolutions

    torch.set_num_threads(1)
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))
    print(f"{'model':10} {'before ms':>9} {'after ms':>9} {'saved':>6}   (CPU ms per step, median of {steps})")
    for name in ("fbnetv3_b", "fbnetv3_d", "fbnetv3_g"):
        torch.manual_seed(0)
        model = models.build(name, 10).to(memory_format=torch.channels_last).train()
        variants = {"before": (model, torch.optim.AdamW(model.parameters(), lr=0.005), contextlib.nullcontext)}
        fast = copy.deepcopy(model)
        variants["after"] = (fast, torch.optim.AdamW(fast.parameters(), lr=0.005, fused=True), fast_convolutions)
        times: dict[str, list[float]] = {k: [] for k in variants}
        for i in range(steps + 1):  # the first step of each warms up
            for key, (net, opt, mode) in variants.items():
                start = time.process_time()
                opt.zero_grad(set_to_none=True)
                with mode():  # as in Trainer.run: the forward under the mode
                    logits = net(x)
                F.cross_entropy(logits, y, label_smoothing=0.1).backward()
                opt.step()
                if i:
                    times[key].append(1000 * (time.process_time() - start))
        before, after = (statistics.median(times[k]) for k in ("before", "after"))
        print(f"{name:10} {before:9.0f} {after:9.0f} {1 - after / before:6.0%}", flush=True)


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    import yaml

    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=("table", "curve", "control", "step"), default="table")
    parser.add_argument("--store", default=None,
                        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    parser.add_argument("--tier", default="quick")
    parser.add_argument("--steps", type=int, default=10, help="step: timed steps per model and variant")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="curve, control: config override")
    args = parser.parse_args()
    if args.what == "step":
        step(args.steps)
    elif args.what in ("curve", "control"):
        (curve if args.what == "curve" else control)(_parse_sets(args.set))
    else:
        table(args.store, args.tier)


if __name__ == "__main__":
    main()
