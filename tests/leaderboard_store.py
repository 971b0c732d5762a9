"""A real MLflow store for the leaderboard tests, made once per test session, and an HTML reader.

The store holds, all through the suite's own runners and tracking module:

* toy, task version 1: the quick grid (value 0.25 and 0.75, seeds 0-2) run by a real sweep; a
  ``--force`` rerun of value 0.25 seed 0 (the older run is superseded, not counted twice); one
  configuration with a single seed (value 0.5); a FAILED crash and a KILLED run;
* toy, task version 0: two seeds of value 0.25 with other numbers, and a FAILED run, logged as
  an older version of the task would have logged them;
* privtoy: a family with example-level DP (its epsilon under three accountants), label-level DP (with a
  data-dependent epsilon its schema wrongly ranks, and a Pareto pair over it) and non-private rows, and a
  task note;
* dpsgd: three real, tiny Opacus runs (non-private, epsilon 1 and 8) for its Pareto plots.
"""

from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal

from runners.local import run_one
from runners.outcome import open_run
from runners.cell import Cell
from runners.sweep import plan, run_sweep
from suite.config import ApproxDPBudget, BaseConfig, PureDPBudget, config_hash
from suite.schema import Metric
from suite.task import get_task
from suite.tracking import Tracker

_STORES: dict[str, Path] = {}
DPSGD_TINY = {"epochs": 1, "train_subset": 256, "audit_canaries": 0}


def shared_store(tmp_path_factory) -> Tracker:  # noqa: ANN001 - pytest's TempPathFactory
    """The session's store (made on first use)."""
    if "main" not in _STORES:
        root = tmp_path_factory.mktemp("leaderboard-store")
        make_store(Tracker(f"sqlite:///{root / 'mlflow.db'}"))
        _STORES["main"] = root
    return Tracker(f"sqlite:///{_STORES['main'] / 'mlflow.db'}")


def make_store(tracker: Tracker) -> None:
    toy = get_task("toy")
    run_sweep(plan([toy], "quick"), tracker=tracker, jobs=2)
    run_one(toy, "quick", toy.resolve("quick", {"value": 0.25, "seed": 0}), tracker=tracker, force=True)
    run_one(toy, "quick", toy.resolve("quick", {"value": 0.5}), tracker=tracker)
    run_one(toy, "quick", toy.resolve("quick", {"method": "crash"}), tracker=tracker)
    kill_a_run(tracker, toy.resolve("quick", {"value": 0.75, "seed": 3}))
    _log_old_toy_version(tracker)
    _log_privacy_family(tracker)
    dpsgd = get_task("dpsgd")
    for overrides in ({"method": "nonprivate"}, {"epsilon": 1.0}, {"epsilon": 8.0}):
        run_one(dpsgd, "quick", dpsgd.resolve("quick", {**DPSGD_TINY, **overrides}), tracker=tracker)


def kill_a_run(tracker: Tracker, config: BaseConfig) -> str:
    """A run that was interrupted: opened, then ended KILLED."""
    run_id = open_run(tracker, Cell.make(get_task("toy"), "quick", config))
    tracker.end(run_id, "KILLED", "interrupted by SIGTERM")
    return run_id


def _log(tracker: Tracker, task: str, version: str, config: BaseConfig, metrics: dict[str, float],
         schema: dict[str, Metric], unit: str, pareto: list[list[str]], notes: tuple[str, ...] = ()) -> str:
    """Log one FINISHED run as the runners do, for a task version or family that is not registered."""
    digest = config_hash(task, version, config)
    tags = {"privacy.unit": unit, "privacy.accountant": "rdp" if unit != "none" else "none",
            "suite.git_commit": "0123abc", "suite.version": "0.0.9"}  # as an older checkout logged it
    run_id = tracker.open_run(task=task, task_version=version, tier="quick", config=config, config_hash=digest,
                              tags=tags)
    summary = {"task": task, "task_version": version, "tier": "quick", "config": config.model_dump(mode="json"),
               "config_hash": digest, "git_commit": "0123abc", "suite_version": "0.0.9",
               "description": f"{task} test family", "pareto": pareto, "notes": list(notes)}
    tracker.finish(run_id, metrics, schema=schema, environment={"python": "3.11.0", "cpu": "test cpu"},
                   summary=summary)
    return run_id


def _log_old_toy_version(tracker: Tracker) -> None:
    toy = get_task("toy")
    schema = toy.result_schema(["train"])
    for seed in (0, 1):
        config = toy.parse({"method": "ok", "value": 0.25, "seed": seed})
        _log(tracker, "toy", "0", config, {"utility/accuracy": 0.9 + seed / 100, "compute/steps": 0.0},
             schema, "none", [])
    failed = toy.parse({"method": "ok", "value": 0.5, "seed": 1})
    run_id = tracker.open_run(task="toy", task_version="0", tier="quick", config=failed,
                              config_hash=config_hash("toy", "0", failed),
                              tags={"privacy.unit": "none", "privacy.accountant": "none"})
    tracker.end(run_id, "FAILED", "RuntimeError: old version broke")


class NonPrivateConfig(BaseConfig):
    method: Literal["nonprivate"] = "nonprivate"  # no DP


class DPSGDConfig(ApproxDPBudget, BaseConfig):
    method: Literal["dpsgd"] = "dpsgd"  # example-level (epsilon, delta)-DP


class RRConfig(PureDPBudget, BaseConfig):
    method: Literal["rr"] = "rr"  # label-level pure epsilon-DP


def priv_config(method: str, seed: int, epsilon: float | None) -> BaseConfig:
    """A privtoy config as its method's own model holds it: only dpsgd has a delta, only the private ones epsilon."""
    if method == "dpsgd":
        return DPSGDConfig(seed=seed, epsilon=epsilon, delta=1e-5)
    return RRConfig(seed=seed, epsilon=epsilon) if method == "rr" else NonPrivateConfig(seed=seed)


PRIV_SCHEMA = {"utility/accuracy": Metric("higher", "fraction", "test accuracy"),
               "privacy/epsilon": Metric("lower", "epsilon", "spent budget"),
               "privacy/epsilon_rdp": Metric("lower", "epsilon", "RDP accountant"),  # "lower": the board must not rank it
               "privacy/epsilon_prv": Metric("lower", "epsilon", "PRV accountant"),
               "privacy/epsilon_pld": Metric("lower", "epsilon", "PLD accountant"),
               "privacy/epsilon_data_dependent": Metric("lower", "epsilon", "PATE's data-dependent bound"),
               "privacy/audit_epsilon_lb": Metric("none", "epsilon", "audit's lower bound"),
               "compute/wall_s": Metric("lower", "s", "wall time")}
# method -> (privacy unit, target epsilon, accuracy per seed)
PRIV_RUNS = {"dpsgd": ("example", 1.0, (0.70, 0.74)), "rr": ("label", 1.0, (0.80, 0.84)),
             "nonprivate": ("none", None, (0.95, 0.97))}
# method -> audit lower bound per seed: dpsgd's seed 1 (claim 0.98) is contradicted, rr's runs are not
PRIV_AUDITS = {"dpsgd": (0.3, 1.5), "rr": (0.2, 0.1)}
# dpsgd's epsilon under each accountant, as offsets from its claim (the claim is RDP's); rr's data-dependent epsilon
PRIV_ACCOUNTANTS = {"privacy/epsilon_rdp": 0.0, "privacy/epsilon_prv": -0.05, "privacy/epsilon_pld": -0.06}
PRIV_DATA_DEPENDENT = (0.2, 0.3)
PRIV_NOTE = "The rr hyperparameters were tuned without accounting (a test note)."


def _log_privacy_family(tracker: Tracker) -> None:
    for method, (unit, epsilon, accuracies) in PRIV_RUNS.items():
        for seed, accuracy in enumerate(accuracies):
            config = priv_config(method, seed, epsilon)
            metrics = {"utility/accuracy": accuracy, "compute/wall_s": 1.0 + seed}
            if epsilon:
                metrics["privacy/epsilon"] = epsilon - 0.01 * (seed + 1)
                metrics["privacy/audit_epsilon_lb"] = PRIV_AUDITS[method][seed]
            if method == "dpsgd":
                metrics.update({k: metrics["privacy/epsilon"] + d for k, d in PRIV_ACCOUNTANTS.items()})
            if method == "rr":
                metrics["privacy/epsilon_data_dependent"] = PRIV_DATA_DEPENDENT[seed]
            _log(tracker, "privtoy", "1", config, metrics, PRIV_SCHEMA, unit,
                 [["privacy/epsilon", "utility/accuracy"], ["privacy/epsilon_data_dependent", "utility/accuracy"]],
                 notes=(PRIV_NOTE,))


def t_quantile_975(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def ci95(values: list[float]) -> float:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return t_quantile_975(n - 1) * std / math.sqrt(n)


class Page(HTMLParser):
    """The parts of a generated page the tests read: links, and each board table's cells."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tables: list[dict] = []
        self._cell: dict | None = None
        self._in_head = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        for key in ("href", "src"):
            if key in a:
                self.links.append(a[key])
        if tag == "table":
            self.tables.append({"id": a.get("id", ""), "class": a.get("class", ""), "headers": [], "rows": []})
        elif tag == "thead":
            self._in_head = True
        elif tag == "tbody":
            self._in_head = False
        elif tag == "tr" and self.tables and not self._in_head:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell = {**a, "text": ""}
            if tag == "th" and self._in_head and "data-type" in a:
                self.tables[-1]["headers"].append(self._cell)
            elif tag == "td" and self.tables[-1]["rows"]:
                self.tables[-1]["rows"][-1].append(self._cell)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data


def board(page: Page, index: int = 0) -> tuple[list[str], list[dict[str, dict]]]:
    """Header labels and rows (header label -> cell) of the ``index``-th sortable table of a page."""
    tables = [t for t in page.tables if "sortable" in t["class"]]
    table = tables[index]
    labels = [" ".join(h["text"].split()) for h in table["headers"]]
    names = [h.get("data-metric") or label for h, label in zip(table["headers"], labels)]
    return names, [dict(zip(names, row)) for row in table["rows"]]
