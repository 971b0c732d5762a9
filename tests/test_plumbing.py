"""Plumbing the families share, from the core: the device resolver and the config mixins."""

from __future__ import annotations

from typing import Literal

import pytest

from suite.config import ApproxDPBudget, BaseConfig, DataLocation, DeviceChoice, PureDPBudget, build_config, describe_fields
from suite.device import resolve_device
from suite.errors import ConfigError


def test_resolve_device() -> None:
    import torch

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="device=cuda but torch sees no CUDA device; use --set device=cpu"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="one of auto, cpu, cuda"):
        resolve_device("tpu")


class _Family(DataLocation, DeviceChoice, BaseConfig):  # mixins first: their keys follow method and seed
    epochs: int = 1  # passes


class _Private(PureDPBudget, _Family):
    method: Literal["private"] = "private"


class _Approx(ApproxDPBudget, _Family):
    method: Literal["approx"] = "approx"


def test_mixins_give_their_keys_with_comments_and_checks() -> None:
    rows = {r["key"]: r for r in describe_fields(_Private)}
    assert list(rows) == ["method", "seed", "device", "data_dir", "download", "epochs", "epsilon"]
    assert rows["epsilon"]["default"] == "required" and rows["epsilon"]["allowed"] == "> 0"
    assert rows["data_dir"]["doc"].startswith("local data directory") and rows["device"]["allowed"] == "auto, cpu, cuda"
    with pytest.raises(ConfigError, match="epsilon"):
        build_config(_Private, {})
    with pytest.raises(ConfigError, match="delta"):
        build_config(_Approx, {"epsilon": 1.0, "delta": 1.0})
    with pytest.raises(ConfigError, match="unknown key 'delta'"):
        build_config(_Private, {"epsilon": 1.0, "delta": 1e-5})  # pure DP has no delta
    assert build_config(_Family, {"method": "x", "download": True}).data_dir is None
