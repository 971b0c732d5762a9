"""Curves a task declares (``Task.curves``) and privacy measurements kept across units (``per_privacy_unit``).

The store is logged as the runners log it, for a family that is not registered (``curvetoy``), so the
board can only know its curves and metric kinds from the runs' ``result.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from leaderboard.build import build_site
from suite.config import ApproxDPBudget, BaseConfig, config_hash
from suite.schema import Curve, Metric
from tests.leaderboard_store import Page, board

CURVE = Curve("exposure", "exposure vs repetitions", "repetitions", "exposure [bits]",
              ((0, "privacy/exposure_r0"), (4, "privacy/exposure_r4"), (64, "privacy/exposure_r64")), "symlog",
              "planted canaries", guides=((1.44, "chance"),))
SCHEMA = {"utility/perplexity": Metric("lower", "ppl", "held-out perplexity"),
          "privacy/epsilon": Metric("lower", "epsilon", "spent budget"),
          **{key: Metric("lower", "bits", "exposure", per_privacy_unit=False) for _, key in CURVE.points}}
# method -> (unit, epsilon, exposure at r = 0, 4, 64)
RUNS = {"nonprivate": ("none", None, (1.4, 8.0, 29.0)), "dpsgd": ("example", 1.0, (1.5, 1.6, 2.0))}


class NonPrivateConfig(BaseConfig):
    method: Literal["nonprivate"] = "nonprivate"  # trained without DP


class DPSGDConfig(ApproxDPBudget, BaseConfig):
    method: Literal["dpsgd"] = "dpsgd"  # trained with DP-SGD


def curve_config(method: str, seed: int, epsilon: float | None) -> BaseConfig:
    if method == "dpsgd":
        return DPSGDConfig(seed=seed, epsilon=epsilon, delta=1e-5)
    return NonPrivateConfig(seed=seed)


@pytest.fixture
def site(store, tmp_path: Path) -> Path:
    for method, (unit, epsilon, exposures) in RUNS.items():
        for seed in (0, 1):
            config = curve_config(method, seed, epsilon)
            metrics = {"utility/perplexity": 50.0 + seed,
                       **{key: value + seed / 10 for (_, key), value in zip(CURVE.points, exposures)}}
            if epsilon:
                metrics["privacy/epsilon"] = epsilon
            digest = config_hash("curvetoy", "1", config)
            run_id = store.open_run(task="curvetoy", task_version="1", tier="quick", config=config,
                                    config_hash=digest, tags={"privacy.unit": unit, "privacy.accountant": "rdp"})
            summary = {"task": "curvetoy", "task_version": "1", "tier": "quick", "config_hash": digest,
                       "config": config.model_dump(mode="json"), "pareto": [], "curves": [CURVE.to_json()]}
            store.finish(run_id, metrics, schema=SCHEMA, environment={}, summary=summary)
    out = tmp_path / "site"
    build_site(store, out)
    return out


def test_a_measurement_declared_across_units_keeps_every_runs_value(site: Path) -> None:
    names, rows = board(Page((site / "tasks" / "curvetoy.html").read_text()))
    assert "privacy/exposure_r64" in names and "privacy/epsilon [example]" in names
    assert not any(name.startswith("privacy/exposure_r64 [") for name in names)
    by_method = {row["method"]["text"].split()[0]: row for row in rows}
    assert float(by_method["nonprivate"]["privacy/exposure_r64"]["data-value"]) == pytest.approx(29.05)
    assert float(by_method["dpsgd"]["privacy/exposure_r64"]["data-value"]) == pytest.approx(2.05)
    assert by_method["nonprivate"]["privacy/epsilon [example]"]["text"] == "—"  # a guarantee stays per unit


def test_declared_curve_is_drawn_with_a_line_per_configuration(site: Path) -> None:
    page = (site / "tasks" / "curvetoy.html").read_text()
    plots = sorted((site / "plots").glob("curvetoy-*curve-exposure.svg"))
    assert len(plots) == 1 and f"../plots/{plots[0].name}" in Page(page).links
    assert "<h3>Curves</h3>" in page and "planted canaries" in page
    svg = plots[0].read_text()
    assert "#1f77b4" in svg and "#ff7f0e" in svg  # a line in each configuration's colour (tab10, by table row)
    again = site.parent / "again"
    from suite.tracking import Tracker

    build_site(Tracker(), again)
    assert (again / "plots" / plots[0].name).read_bytes() == plots[0].read_bytes()  # reproducible SVG


def test_a_curve_reads_back_from_result_json_as_declared() -> None:
    from leaderboard.schema import CurveSpec

    spec = CurveSpec.from_json(CURVE.to_json())
    assert (spec.name, spec.points, spec.x_scale, spec.guides) == (CURVE.name, CURVE.points, "symlog", CURVE.guides)
    assert CurveSpec.from_json({"name": "broken", "points": [[1]]}) is None  # a malformed entry is skipped
