"""The registry drives these tests: every registered task's smallest config runs and logs the contract."""

from __future__ import annotations

import subprocess
import sys

import pytest

from runners.local import run_one
from suite.privacy import EPSILON_METRICS, SAMPLERS, accountants_for
from suite.resolve import smoke
from suite.schema import AXES, PRIVACY_UNITS
from suite.task import discover

TASKS = discover().names()
CONTRACT_TAGS = ("suite.task", "suite.task_version", "suite.method", "suite.tier", "suite.seed", "suite.config_hash", "suite.git_commit",
                 "suite.version", "privacy.unit", "privacy.accountant")


def _smoke_configs(name: str) -> list:
    """The tier's defaults and smoke overrides for each method (one config per method)."""
    task = discover().get(name)
    return [smoke(task, method) for method in task.methods()]


@pytest.mark.parametrize("name", TASKS)
def test_every_task_declares_a_valid_schema_and_quick_tier(name: str) -> None:
    task = discover().get(name)
    assert "quick" in task.tiers()
    assert task.methods()
    for key, metric in task.result_schema(["train"]).items():
        assert key.split("/")[0] in AXES and metric.direction in ("higher", "lower", "none")
    assert any(k.startswith("utility/") for k in task.metrics)


@pytest.mark.parametrize("name", TASKS)
def test_smallest_config_of_every_method_runs_and_logs_the_contract(name: str, store) -> None:
    task = discover().get(name)
    for config in _smoke_configs(name):
        if config.method in ("crash", "nan", "hang"):
            continue  # the toy task's planned faults have their own tests
        outcome = run_one(task, "quick", config, tracker=store)
        assert outcome.status == "FINISHED", outcome.reason
        run = store.run(outcome.run_id)
        assert set(CONTRACT_TAGS) <= set(run.tags)
        assert run.tags["privacy.unit"] in PRIVACY_UNITS
        metrics = run.metrics
        assert set(metrics) <= set(task.result_schema(_phases(metrics)))
        assert {"compute/wall_s", "compute/cpu_s", "compute/peak_rss_mb"} <= set(metrics)
        assert any(k.startswith("utility/") for k in metrics)
        if run.tags["privacy.unit"] != "none":
            assert metrics["privacy/epsilon"] > 0 and run.tags["privacy.accountant"] != "none"
        sampler = run.tags.get("privacy.sampler")
        if sampler is not None:  # an accountant analyses it: every accountant that can has its say
            assert sampler in SAMPLERS
            assert {EPSILON_METRICS[a] for a in accountants_for(sampler)} <= set(metrics)
        result = store.read_json(outcome.run_id, "result.json")
        assert set(result["metrics"]) == set(outcome.metrics)  # metrics linked later (slowdown) are not in it
        assert result["notes"] == list(task.notes)
        assert result["config"] == config.model_dump(mode="json")
        assert set(result["schema"]) == set(task.result_schema(_phases(metrics)))  # declared, logged or not
        assert result["privacy_unit"] == run.tags["privacy.unit"]
        _check_examples(store, outcome.run_id, metrics)


def _check_examples(store, run_id: str, metrics: dict) -> None:  # noqa: ANN001
    """Per-example scores, where a task records them, reproduce the run's metric."""
    from suite.examples import ExampleScores

    for item in store.client.list_artifacts(run_id, "examples"):  # the test lists what the run logged
        scores = ExampleScores.from_json(store.read_json(run_id, item.path))
        assert scores.artifact == item.path and scores.agrees_with(metrics[scores.metric]), item.path


def _phases(metrics: dict) -> list[str]:
    return [k.removeprefix("compute/").removesuffix("_s") for k in metrics if k.endswith("_s")]


def test_suite_list_imports_no_heavy_library() -> None:
    code = ("import sys; from cli.main import main; main(['list']); "
            "heavy = {'torch', 'opacus', 'flwr', 'transformers', 'ray', 'mlflow', 'timm', 'sklearn'}; "
            "print('HEAVY', sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "HEAVY []" in out.stdout, out.stdout
    for name in TASKS:
        assert name in out.stdout
