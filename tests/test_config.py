"""Strict configs, tier files, config hashes and the registry's errors."""

from __future__ import annotations

import pytest

from suite import resolve
from suite.config import ApproxDPBudget, BaseConfig, build_config, config_hash, expand_grid, parse_overrides
from suite.errors import ConfigError, UsageError
from suite.registry import Registry
from suite.task import discover, get_task


def test_registry_rejects_duplicates_and_suggests_close_names() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("alpha", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("alpha", 2)
    with pytest.raises(UsageError, match="did you mean 'alpha'"):
        reg.get("alpah")


def test_unknown_task_suggests_the_close_one() -> None:
    with pytest.raises(UsageError, match="unknown task 'dpsdg'; did you mean 'dpsgd'"):
        get_task("dpsdg")


def test_overrides_parse_yaml_scalars() -> None:
    assert parse_overrides(["lr=0.1", "method=dpsgd", "epochs=3", "data_dir=", "x=[1, 2]"]) == {
        "lr": 0.1, "method": "dpsgd", "epochs": 3, "data_dir": None, "x": [1, 2]}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["lr"])


@pytest.mark.parametrize(
    ("overrides", "named", "allowed"),
    [
        ({"lrr": 0.1}, "lrr", "did you mean 'lr'"),
        ({"epochs": "many"}, "epochs", "valid integer"),
        ({"epsilon": 0}, "epsilon", "greater than 0"),
        ({"epsilon": -1.0}, "epsilon", "greater than 0"),
        ({"delta": 1.0}, "delta", "less than 1"),
        ({"lr": -0.5}, "lr", "greater than 0"),
        ({"method": "dpsdg"}, "method", "did you mean 'dpsgd'? (known methods: dpsgd, nonprivate)"),
        ({"grad_sample_mode": "magic"}, "grad_sample_mode", "'hooks', 'functorch' or 'ghost'"),
        ({"epsilon": None}, "epsilon", "Input should be a valid number"),
        ({"method": "nonprivate", "epsilon": 3.0}, "epsilon",
         "not a key of method nonprivate; methods that have it: dpsgd"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(overrides: dict, named: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        get_task("dpsgd").resolve("quick", overrides)
    message = str(info.value)
    assert named in message and allowed in message


def test_unknown_tier_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown tier .medium. \(known tiers: quick, full\)"):
        get_task("dpsgd").resolve("medium")


def test_nonprivate_config_has_no_privacy_keys_so_equal_runs_hash_equal() -> None:
    """The tier's dpsgd defaults (epsilon, grad_sample_mode, ...) pass over nonprivate, as does a sweep's --set."""
    from suite.resolve import build, lenient

    task = get_task("dpsgd")
    a = task.resolve("quick", {"method": "nonprivate"})
    b = build(task, [lenient(task.tier("quick").defaults), lenient({"method": "nonprivate", "epsilon": 8.0,
                                                                     "grad_sample_mode": "ghost"})])
    assert not {"epsilon", "delta", "max_grad_norm", "grad_sample_mode", "accountant"} & set(type(a).model_fields)
    assert config_hash("dpsgd", "1", a) == config_hash("dpsgd", "1", b)


def test_config_hash_depends_on_values_and_task_version() -> None:
    task = get_task("dpsgd")
    base = task.resolve("quick")
    other = task.resolve("quick", {"seed": 1})
    h = config_hash("dpsgd", "1", base)
    assert len(h) == 64 and h == config_hash("dpsgd", "1", task.resolve("quick"))
    assert h != config_hash("dpsgd", "1", other)
    assert h != config_hash("dpsgd", "2", base)


def test_grid_is_the_union_of_cartesian_products() -> None:
    cells = expand_grid([{"a": [1, 2], "b": ["x", "y"]}, {"a": [3]}])
    assert cells == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}, {"a": 3}]


def test_common_keys_are_validated_in_every_task() -> None:
    class Plain(ApproxDPBudget, BaseConfig):
        method: str = "m"

    budget = {"epsilon": 1.0, "delta": 1e-5}
    assert build_config(Plain, budget).seed == 0
    with pytest.raises(ConfigError, match="seed"):
        build_config(Plain, {**budget, "seed": -1})
    with pytest.raises(ConfigError, match="delta"):
        build_config(Plain, {**budget, "delta": 0})


def test_dpsgd_quick_grid_covers_the_issue() -> None:
    from runners.sweep import plan

    cells = plan([get_task("dpsgd")], "quick")
    combos = {(c.config["method"], c.config.get("epsilon"), c.config.get("grad_sample_mode"),
               c.config.get("accountant")) for c in cells}
    assert {("dpsgd", e, "hooks", "rdp") for e in (1.0, 3.0, 8.0)} <= combos
    assert {("dpsgd", 3.0, m, "rdp") for m in ("functorch", "ghost")} <= combos
    assert ("nonprivate", None, None, None) in combos
    seeds = {c.config["seed"] for c in cells}
    assert len(seeds) >= 3
    assert len({c.hash for c in cells}) == len(cells)


@pytest.mark.parametrize("name", discover().names())
@pytest.mark.parametrize(("key", "text"), [("epsilon", "inf"), ("epsilon", ".nan"), ("delta", "nan"),
                                           ("epsilon", "1e400"), ("delta", "-.inf")])
def test_non_finite_budgets_are_refused_by_every_task(name: str, key: str, text: str) -> None:
    """Also where a method then drops the key (non-private runs, pruning, llm): it is a mistake, not a budget.
    A method plugin without the key refuses it as a key it does not have."""
    task = get_task(name)
    for method in task.methods():
        has_key = key in task.config_model(method).model_fields
        expected = f"{key}( must be|: Input should be) a finite number" if has_key else \
            f"(key '{key}' is not a key of method {method}|unknown key '{key}')"
        spec = task.tier("quick")  # its smoke keys apply to the methods that have them, as in the conformance test
        layers = [resolve.lenient(spec.defaults), resolve.lenient(spec.smoke),
                  resolve.strict({"method": method, **parse_overrides([f"{key}={text}"])})]
        with pytest.raises(ConfigError, match=expected):
            resolve.build(task, layers)


def test_non_finite_numbers_are_refused_for_every_key() -> None:
    with pytest.raises(ConfigError, match=r"lr: Input should be a finite number \(got 'inf'\)"):
        get_task("dpsgd").resolve("quick", parse_overrides(["lr=inf"]))


def test_suite_run_with_infinite_epsilon_exits_2_and_writes_nothing(tmp_path) -> None:
    from tests.conftest import suite_cli

    done = suite_cli("run", "dpsgd", "--set", "epsilon=inf", cwd=tmp_path)
    assert done.returncode == 2 and "epsilon: Input should be a finite number (got 'inf')" in done.stderr
    assert "Traceback" not in done.stderr and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", discover().names())
def test_every_tiers_smoke_config_validates(name: str) -> None:
    task = get_task(name)
    for tier in task.tiers():
        for method in task.methods():
            resolve.smoke(task, method, tier)
