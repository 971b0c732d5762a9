"""Meters against quantities known by hand."""

from __future__ import annotations

import time

import pytest

from suite.meters import Stopwatch, count_flops, model_size, peak_rss_mb


def test_flop_counter_counts_a_linear_layer() -> None:
    import torch

    layer = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(8, 64)
    assert count_flops(lambda: layer(x)) == 2 * 8 * 64 * 32
    # forward plus backward: the input needs no gradient, so backward computes only the weight's
    assert count_flops(lambda: layer(x).sum().backward()) == 2 * (2 * 8 * 64 * 32)


def test_model_size_counts_parameters_and_buffers() -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(10, 5), torch.nn.BatchNorm1d(5))
    size = model_size(model)
    assert size["compute/params"] == 10 * 5 + 5 + 5 + 5
    # float32 parameters, float32 running mean/var, int64 num_batches_tracked
    assert size["compute/model_bytes"] == (65 + 10) * 4 + 8


def test_stopwatch_and_peak_rss() -> None:
    watch = Stopwatch().start()
    busy_until = time.perf_counter() + 0.2
    while time.perf_counter() < busy_until:
        pass
    watch.stop()
    assert watch.wall_s == pytest.approx(0.2, abs=0.15) and watch.cpu_s > 0.05
    before = peak_rss_mb()
    block = bytearray(200 * 1024 * 1024)
    block[:: 4096] = b"x" * len(block[:: 4096])  # touch every page
    assert peak_rss_mb() >= before + 150 or before > 200
    del block
