"""Load tests (benchmarks/load.py): many tiny cells, 2 jobs, no lost or duplicated runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.load import load_test


def _check(result: dict) -> None:
    assert result["runs"] == result["cells"], result
    assert (result["lost"], result["duplicated"], result["foreign"], result["missing_metric"]) == (0, 0, 0, 0), result
    assert result["second_sweep_cached"], result


def test_sweep_of_24_cells_into_sqlite_loses_nothing(tmp_path: Path) -> None:
    result = load_test("sqlite", task="toyfault", jobs=2, workdir=tmp_path)
    assert result["cells"] == 24
    _check(result)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "server"])
def test_sweep_of_200_cells_loses_nothing(tmp_path: Path, backend: str) -> None:
    result = load_test(backend, task="toyload", jobs=2, workdir=tmp_path)
    print("load test:", result)
    assert result["cells"] == 200
    _check(result)
