"""Methods as plugins: registration, per-method config resolution, hashing, and the runs they make.

The toy task (tests/toy/) is in the plugin shape: methods ok, crash, nan, hang (keys hang_s)
and noisy (key epsilon, from the budget mixin), like every family of tasks/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import Field, TypeAdapter

from runners.local import run_one
from runners.sweep import plan
from suite.config import BaseConfig, config_hash
from suite.errors import ConfigError
from suite.method import Method, MethodRegistry
from suite.resolve import smoke
from suite.task import Task, get_task, register_task
from tests.conftest import suite_cli
from tests.toy.task import ToyTask

TOY = get_task("toy")


def _toy_with_tier(tmp_path: Path, name: str, tier: dict) -> type[Task]:
    """The toy task under another name, reading its quick tier from ``tier``."""
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "quick.yaml").write_text(yaml.safe_dump(tier))

    class Variant(ToyTask):
        @classmethod
        def config_dir(cls) -> Path:
            return configs

    return register_task(name)(Variant)


def test_each_method_holds_only_its_keys() -> None:
    assert TOY.methods() == ("crash", "hang", "nan", "noisy", "ok", "ray_address")
    assert set(TOY.config_model("ok").model_fields) == {"method", "seed", "sleep_s", "value"}
    assert set(TOY.config_model("hang").model_fields) == {"method", "seed", "sleep_s", "value", "hang_s"}
    assert set(TOY.config_model("noisy").model_fields) == {"method", "seed", "sleep_s", "value", "epsilon"}
    assert TOY.method_registry.holders()["epsilon"] == ["noisy"]


def test_defaults_apply_to_the_methods_that_have_the_key() -> None:
    ok, noisy = TOY.resolve("quick"), TOY.resolve("quick", {"method": "noisy"})
    assert ok.model_dump() == {"method": "ok", "seed": 0, "sleep_s": 0.0, "value": 0.5}  # no epsilon at all
    assert noisy.epsilon == 1.0  # from the tier's defaults


def test_equal_computations_hash_equally_without_reset_validators() -> None:
    """An ok config is the same whatever budget the tier or another method's keys would set."""
    plain = TOY.parse({"method": "ok", "seed": 1, "sleep_s": 0.0, "value": 0.5})
    resolved = TOY.resolve("quick", {"seed": 1})
    assert config_hash("toy", "1", plain) == config_hash("toy", "1", resolved)
    assert config_hash("toy", "1", TOY.resolve("quick", {"method": "noisy", "epsilon": 2})) != \
        config_hash("toy", "1", TOY.resolve("quick", {"method": "noisy"}))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"hang_s": 1}, "key 'hang_s' is not a key of method ok; methods that have it: hang"),
    ({"method": "ok", "epsilon": 2}, "key 'epsilon' is not a key of method ok; methods that have it: noisy"),
    ({"valu": 1}, "unknown key 'valu'; did you mean 'value'?"),
    ({"method": "noisyy"}, "unknown method 'noisyy'; did you mean 'noisy'?"),
    ({"method": "noisy", "epsilon": 0}, "epsilon: Input should be greater than 0"),
    ({"method": "hang", "hang_s": -1}, "hang_s: Input should be greater than or equal to 0"),
])
def test_a_run_override_must_be_a_key_of_the_method(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        TOY.resolve("quick", overrides)
    assert message in str(info.value)


def test_run_refuses_another_methods_key_with_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    result = suite_cli("run", "toy", "--set", "method=noisy", "--set", "hang_s=10", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "key 'hang_s' is not a key of method noisy; methods that have it: hang" in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_show_lists_only_the_chosen_methods_keys(tmp_path: Path) -> None:
    hang = suite_cli("show", "toy", "--set", "method=hang", cwd=tmp_path)
    ok = suite_cli("show", "toy", cwd=tmp_path)
    assert hang.returncode == ok.returncode == 0, hang.stderr + ok.stderr
    assert "hang_s" in hang.stdout and "epsilon" not in hang.stdout
    assert "hang_s" not in ok.stdout and "epsilon" not in ok.stdout and "keys of method ok" in ok.stdout


def test_a_default_no_method_has_is_an_error_naming_the_file(tmp_path: Path) -> None:
    task = _toy_with_tier(tmp_path, "toy_bad_default", {"defaults": {"method": "ok", "hang": 3}})
    with pytest.raises(ConfigError, match=r"quick\.yaml: defaults sets 'hang', which no method of toy_bad_default "
                                          r"has: unknown key 'hang'; did you mean 'hang_s'"):
        task.resolve("quick")


def test_a_grid_point_must_name_keys_of_its_method(tmp_path: Path) -> None:
    task = _toy_with_tier(tmp_path, "toy_bad_point", {"defaults": {"method": "ok"},
                                                       "grid": [{"method": ["ok", "hang"], "hang_s": [1]}]})
    with pytest.raises(ConfigError) as info:
        plan([task], "quick")
    assert "quick.yaml" in str(info.value) and "'hang_s' is not a key of method ok" in str(info.value)


def test_sweep_overrides_apply_to_the_cells_whose_method_has_the_key(tmp_path: Path) -> None:
    task = _toy_with_tier(tmp_path, "toy_mixed", {"defaults": {"method": "ok", "epsilon": 1.0},
                                                   "grid": [{"method": ["ok", "noisy"], "seed": [0, 1]}]})
    before = {c.hash: c for c in plan([task], "quick")}
    after = plan([task], "quick", {"epsilon": 4.0, "sleep_s": 0.1})
    assert len(before) == len(after) == 4
    for cell in after:
        assert cell.config["sleep_s"] == 0.1
        assert cell.config.get("epsilon") == (4.0 if cell.config["method"] == "noisy" else None)
    only_ok = plan([task], "quick", {"epsilon": 4.0})
    assert {c.hash for c in only_ok if c.config["method"] == "ok"} == \
        {h for h, c in before.items() if c.config["method"] == "ok"}  # ok cells untouched: same hashes
    with pytest.raises(ConfigError, match="no cell of this sweep has the key 'hang_s' \\(methods that have it: "
                                          "toy_mixed hang"):
        plan([task], "quick", {"hang_s": 1.0})
    with pytest.raises(ConfigError, match="unknown key 'epsilonn'; did you mean 'epsilon'"):
        plan([task], "quick", {"epsilonn": 1.0})


def test_smoke_applies_to_the_methods_that_have_the_key() -> None:
    assert smoke(TOY, "noisy").model_dump() == {"method": "noisy", "seed": 0, "sleep_s": 0.1, "value": 0.5,
                                                "epsilon": 1.0}
    assert "epsilon" not in smoke(TOY, "ok").model_dump()


def test_the_family_config_is_the_discriminated_union_of_its_methods() -> None:
    adapter = TypeAdapter(TOY.method_registry.union())
    for values in ({"method": "ok", "value": 0.3}, {"method": "hang", "hang_s": 2.0}, {"method": "noisy", "epsilon": 3}):
        assert adapter.validate_python(values) == TOY.parse(values)
    with pytest.raises(ValueError, match="hang_s"):
        adapter.validate_python({"method": "ok", "hang_s": 2.0})


def test_convert_builds_another_methods_config_from_the_shared_keys() -> None:
    noisy = TOY.resolve("quick", {"method": "noisy", "seed": 2, "value": 0.7})
    assert TOY.method_registry.convert(noisy, "ok") == TOY.parse({"method": "ok", "seed": 2, "value": 0.7})


def test_a_method_declares_its_name_once_and_belongs_to_its_family() -> None:
    class Base(BaseConfig):
        lr: float = Field(0.1, gt=0)  # learning rate

    class Other(BaseConfig):
        pass

    registry = MethodRegistry(Base, package="tests.toy.methods")

    class AConfig(Base):
        method: Literal["a"] = "a"

    class A(Method):
        Config = AConfig

    assert registry.register(A) is A and A.name == "a"
    with pytest.raises(ValueError, match="already registered"):
        registry.register(type("A2", (Method,), {"Config": AConfig}))
    with pytest.raises(TypeError, match="must subclass Base"):
        registry.register(type("B", (Method,), {"Config": type("BConfig", (Other,), {
            "__annotations__": {"method": Literal["b"]}, "method": "b"})}))
    with pytest.raises(TypeError, match="Literal"):
        registry.register(type("C", (Method,), {"Config": type("CConfig", (Base,), {
            "__annotations__": {"method": str}, "method": "c"})}))


def test_a_task_without_a_method_registry_is_refused() -> None:
    """A flat config with a Literal method, with or without a run of its own, is not a task: each method
    is a class with its own config. The refusal names the task and what to set, and registers nothing."""
    from suite.task import TASKS

    class Flat(BaseConfig):
        method: Literal["x", "y"] = "x"

    def run(self, config, ctx):  # noqa: ANN001, ANN202
        return {}

    with_run = type("FlatWithRun", (Task,), {"Config": Flat, "metrics": {}, "run": run})
    without_run = type("FlatNoRun", (Task,), {"Config": Flat, "metrics": {}})
    not_a_registry = type("FlatDict", (Task,), {"Config": Flat, "metrics": {}, "method_registry": {"x": Method}})
    for name, cls in (("toy_flat_run", with_run), ("toy_flat", without_run), ("toy_flat_dict", not_a_registry)):
        with pytest.raises(TypeError, match=f"task {cls.__name__} must set method_registry to its "
                                            "family's MethodRegistry"):
            register_task(name)(cls)
        assert name not in TASKS


def test_method_hooks_give_the_run_its_privacy_tags(store) -> None:
    outcome = run_one(TOY, "quick", TOY.resolve("quick", {"method": "noisy", "epsilon": 2.0}), tracker=store)
    run = store.run(outcome.run_id)
    assert outcome.status == "FINISHED"
    assert (run.tags["privacy.unit"], run.tags["privacy.accountant"]) == ("example", "laplace")
    assert "privacy.sampler" not in run.tags  # pure epsilon-DP: no accountant of a subsampled mechanism
    assert run.metrics["privacy/epsilon"] == pytest.approx(2.0) and run.params["epsilon"] == "2.0"
    plain = store.run(run_one(TOY, "quick", TOY.resolve("quick"), tracker=store).run_id)
    assert plain.tags["privacy.unit"] == "none" and "privacy.sampler" not in plain.tags
    assert "epsilon" not in plain.params


def test_the_board_shows_methods_with_different_keys_side_by_side(store, tmp_path: Path) -> None:
    import pandas as pd

    from leaderboard.build import build_site

    for seed in (0, 1):
        run_one(TOY, "quick", TOY.resolve("quick", {"seed": seed}), tracker=store)
        run_one(TOY, "quick", TOY.resolve("quick", {"method": "noisy", "epsilon": 2.0, "seed": seed}), tracker=store)
    build_site(store, tmp_path / "site")
    table = pd.read_csv(tmp_path / "site" / "data" / "toy.csv").set_index("method")
    assert sorted(table.index) == ["noisy", "ok"] and list(table["seeds"]) == [2, 2]
    assert table.loc["noisy", "params.epsilon"] == 2.0 and pd.isna(table.loc["ok", "params.epsilon"])
    assert table.loc["noisy", "privacy/epsilon [example] mean"] == pytest.approx(2.0)
    assert pd.isna(table.loc["ok", "privacy/epsilon [example] mean"])
    page = (tmp_path / "site" / "tasks" / "toy.html").read_text()
    assert "ε = 2.0 [example]" in (tmp_path / "site" / "index.html").read_text() and "noisy" in page


def test_a_method_without_a_run_under_a_task_that_does_not_drive_it_is_a_clear_error() -> None:
    """Task.run's default runs the config's method; a method that is only a step of its family's own run
    (no ``run``), under a task that does not override ``run``, is refused by name."""

    class Stepwise(Method):
        name = "stepwise"

    class Driverless(ToyTask):
        def method_of(self, config: BaseConfig) -> Method:
            return Stepwise()

    with pytest.raises(TypeError, match="task 'toy': method 'stepwise' has no run"):
        Task.run(Driverless(), TOY.resolve("quick"), ctx=None)  # type: ignore[arg-type]
