"""The first leaderboard: finished runs only, aggregated over seeds, from a real store."""

from __future__ import annotations

import pandas as pd
import pytest

from leaderboard.build import build_site
from runners.sweep import plan, run_sweep
from suite.task import get_task


def test_empty_store_gives_a_page(store, tmp_path) -> None:
    index = build_site(store, tmp_path / "site")
    assert "No finished runs yet" in index.read_text()


def test_table_aggregates_seeds_and_leaves_failed_runs_out(store, tmp_path) -> None:
    toy = get_task("toy")
    run_sweep(plan([toy], "quick"), tracker=store, jobs=2)
    run_sweep(plan([toy], "quick", {"method": "crash"})[:1], tracker=store)
    index = build_site(store, tmp_path / "site")
    table = pd.read_csv(tmp_path / "site" / "toy.csv")
    assert len(table) == 2  # value 0.25 and 0.75, three seeds each; the crashed run is not there
    assert list(table["seeds"]) == [3, 3]
    low = table[table["params.value"] == 0.25].iloc[0]
    assert low["utility/accuracy mean"] == pytest.approx(0.25 + (0 + 1 + 2) / 300)
    assert "toy.csv" in index.read_text()
