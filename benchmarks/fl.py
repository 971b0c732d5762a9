"""Benchmark table of the fl family, read from a store.

    .venv/bin/python -m benchmarks.fl [--store sqlite:///mlflow.db] [--tier quick] [--version N]

One row per setting: every config key that differs between the store's runs (data set,
weighting, codec keys, overrides) except the seed, so that two settings are never averaged
into one row. Per row: accuracy (mean ± std over seeds), the bytes one client sends per round
(Flower-serialized, SecAgg+ included, clients whose update was aggregated) and the SecAgg+
share of them, bytes per round of clients that dropped out, compression against fp32 FedAvg of
the same model, bits per parameter, wall time and Simulation Engine start-up per run.

Then the paper's target per setting, against the fedavg row that matches it on every key that
is not method-specific: at least 32x compression with mean accuracy within 2 points of fedavg's,
with the accuracy difference paired by seed (one seed trains the same clients in every method).
Only the newest FINISHED run of a config hash counts, and only runs of one task version.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

Row = tuple[dict[str, str], dict[str, float]]  # (params, metrics) of one run
_NOT_SETTING = {"seed"}


def _method_keys() -> set[str]:
    """The keys fedavg lacks: a method's own, which its fedavg baseline need not match."""
    from tasks.fl.config import METHODS

    return {k for k, methods in METHODS.holders().items() if "fedavg" not in methods}


def varying_keys(rows: Iterable[Row]) -> list[str]:
    """The config keys whose values differ between runs (the seed aside)."""
    values: dict[str, set[str]] = defaultdict(set)
    rows = list(rows)
    for params, _ in rows:
        for key, value in params.items():
            values[key].add(value)
    keys = {k for k, v in values.items() if len(v) > 1 or any(k not in p for p, _ in rows)}
    return sorted((keys | {"method"}) - _NOT_SETTING)


def group_settings(rows: list[Row]) -> dict[tuple[tuple[str, str], ...], list[Row]]:
    """Runs grouped by the values of every varying key: one group per setting."""
    keys = varying_keys(rows)
    groups: dict[tuple[tuple[str, str], ...], list[Row]] = defaultdict(list)
    for params, metrics in rows:
        groups[tuple((k, params.get(k, "")) for k in keys)].append((params, metrics))
    return dict(groups)


def label(setting: tuple[tuple[str, str], ...]) -> str:
    values = dict(setting)
    rest = [f"{k}={v}" for k, v in setting if k != "method" and v not in ("None", "null", "")]
    return " ".join([values["method"], *rest])


def baseline_of(setting: tuple[tuple[str, str], ...], settings: Iterable[tuple[tuple[str, str], ...]]) -> Any:
    """The fedavg setting equal to ``setting`` on every key that is not method-specific, if any."""
    specific = _method_keys() | {"method"}
    shared = {k: v for k, v in setting if k not in specific}
    for other in settings:
        values = dict(other)
        if values["method"] == "fedavg" and all(values.get(k) == v for k, v in shared.items()):
            return other
    return None


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _mean(rows: list[Row], key: str) -> float:
    return statistics.mean(m.get(key, 0.0) for _, m in rows)


def target(rows: list[Row], base: list[Row]) -> tuple[str, bool]:
    """The 32x-within-2-points verdict of a setting against its fedavg rows, paired by seed."""
    by_seed = {p["seed"]: m["utility/accuracy"] for p, m in base}
    diffs = [m["utility/accuracy"] - by_seed[p["seed"]] for p, m in rows if p["seed"] in by_seed]
    compression = _mean(rows, "bandwidth/compression")
    gap = statistics.mean(m["utility/accuracy"] for _, m in rows) - statistics.mean(by_seed.values())
    holds = compression >= 32 and gap >= -0.02
    paired = (f"paired over {len(diffs)} seeds {_mean_std(diffs)[0]:+.4f} ± {_mean_std(diffs)[1]:.4f}"
              if diffs else "no common seed")
    return f"{compression:.1f}x, accuracy {gap:+.4f} vs fedavg ({paired})", holds


def read_rows(uri: str | None, tier: str, version: str) -> list[Row]:
    from suite.tracking import Tracker

    seen, rows = set(), []
    for run in Tracker(uri).runs("fl", status="FINISHED"):  # newest first: a rerun supersedes
        tags = run.tags
        if tags.get("suite.tier") != tier or tags.get("suite.task_version") != version:
            continue
        if tags.get("suite.config_hash") in seen:
            continue
        seen.add(tags.get("suite.config_hash"))
        rows.append((dict(run.params), dict(run.metrics)))
    return rows


def report(rows: list[Row]) -> None:
    groups = group_settings(rows)
    header = (f"{'setting':44} {'seeds':>5} {'accuracy':>16} {'bytes/client/round':>19} {'secagg part':>12} "
              f"{'dropped/round':>13} {'compression':>12} {'bits/param':>10} {'wall s':>8} {'start s':>8}")
    print(header)
    for setting in sorted(groups, key=lambda s: -_mean(groups[s], "bandwidth/uplink_bytes")):
        g = groups[setting]
        acc, spread = _mean_std([m["utility/accuracy"] for _, m in g])
        print(f"{label(setting):44} {len(g):5d} {acc:8.4f} ± {spread:.4f} "
              f"{_mean(g, 'bandwidth/uplink_bytes'):19,.0f} {_mean(g, 'bandwidth/secagg_overhead_bytes'):12,.0f} "
              f"{_mean(g, 'bandwidth/dropped_bytes'):13,.0f} {_mean(g, 'bandwidth/compression'):11.1f}x "
              f"{_mean(g, 'bandwidth/bits_per_parameter'):10.3f} {_mean(g, 'compute/wall_s'):8.1f} "
              f"{_mean(g, 'compute/startup_s'):8.1f}")
    print("\ntarget: >= 32x uplink compression with accuracy within 2 points of fedavg at the same setting")
    for setting in groups:
        base = baseline_of(setting, groups)
        if dict(setting)["method"] == "fedavg" or base is None:
            continue
        text, holds = target(groups[setting], groups[base])
        print(f"  {label(setting):44} {'holds' if holds else 'not met':8} {text}")


def main() -> None:
    from tasks.fl.task import FLTask

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    parser.add_argument("--tier", default="quick")
    parser.add_argument("--version", default=FLTask.version, help="task version (default: the current one)")
    args = parser.parse_args()
    rows = read_rows(args.store, args.tier, args.version)
    if not rows:
        print(f"no finished fl runs of the {args.tier} tier, task version {args.version}, in the store")
        return
    report(rows)


if __name__ == "__main__":
    main()
