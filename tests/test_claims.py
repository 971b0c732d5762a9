"""Claims on hand-made runs in a real MLflow store: pairing, margins, ties, missing pairs, verdicts that
agree with their own intervals, per-example scores, the site's claims.html and claims.json, `suite claims`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
from scipy.stats import binomtest

from leaderboard.build import build_site, judge
from leaderboard.collect import collect
from suite.claims import Claim, PairedRun, pair_runs
from suite.task import declared_claims
from suite.config import BaseConfig, config_hash
from suite.examples import classification
from suite.schema import Metric
from suite.task import discover
from suite.tracking import Tracker
from tests.conftest import ROOT, suite_cli
from tests.leaderboard_store import Page

FAMILY, VERSION = "claimtoy", "3"
# the fields of site/data/claims.json the issue names
REQUIRED = ("id", "paper", "statement", "tier", "metric", "effect", "ci_low", "ci_high", "pairs", "verdict")
SCHEMA = {"utility/accuracy": Metric("higher", "fraction", "test accuracy"),
          "bandwidth/uplink_bytes": Metric("lower", "bytes", "bytes sent")}


class ClaimToyConfig(BaseConfig):
    knob: float = 1.0  # a key every method has: must match in a pair


class OtherConfig(ClaimToyConfig):
    method: Literal["good", "same", "bad", "lonely", "plain"]  # the methods compared with base


class BaseMethodConfig(ClaimToyConfig):
    method: Literal["base"] = "base"
    only_base: float = 0.5  # a key only method base has: its runs are paired with runs that lack it


def toy_config(method: str, **values: float) -> ClaimToyConfig:
    return BaseMethodConfig(**values) if method == "base" else OtherConfig(method=method, **values)


# method -> accuracy per seed (None: no run of that seed), uplink bytes
ACCURACY = {
    "base": [0.80, 0.70, 0.75],
    "good": [0.86, 0.77, 0.80],  # +0.06, +0.07, +0.05 over base
    "same": [0.81, 0.69, 0.755],  # +0.01, -0.01, +0.005: a tie
    "bad": [0.60, 0.55, 0.50],
    "lonely": [0.90, 0.91, None],  # seed 2 missing: its pair with base is missing
}
BYTES = {"base": 3200.0, "good": 100.0, "same": 3200.0, "bad": 3200.0, "lonely": 3200.0}


def _log(tracker: Tracker, config: ClaimToyConfig, metrics: dict[str, float], examples=()) -> str:  # noqa: ANN001
    digest = config_hash(FAMILY, VERSION, config)
    run_id = tracker.open_run(task=FAMILY, task_version=VERSION, tier="quick", config=config, config_hash=digest,
                              tags={"privacy.unit": "none", "privacy.accountant": "none"})
    summary = {"task": FAMILY, "task_version": VERSION, "tier": "quick", "config": config.model_dump(mode="json"),
               "config_hash": digest, "description": "claims test family", "pareto": []}
    tracker.finish(run_id, metrics, schema=SCHEMA, environment={}, summary=summary, examples=examples)
    return run_id


# Per-example predictions of the one-seed pair 'plain' vs 'base' at knob 2: 360 examples, 'plain' right
# on 340, 'base' on 300; 45 examples only plain gets right, 5 only base.
N, PLAIN_ONLY, BASE_ONLY = 360, 45, 5


def _predictions() -> tuple[list[int], list[int], list[int]]:
    target = [i % 10 for i in range(N)]
    plain = list(target)
    base = list(target)
    for i in range(20):  # both wrong
        plain[i] = base[i] = (target[i] + 1) % 10
    for i in range(20, 20 + PLAIN_ONLY):  # only plain right
        base[i] = (target[i] + 1) % 10
    for i in range(20 + PLAIN_ONLY, 20 + PLAIN_ONLY + BASE_ONLY):  # only base right
        plain[i] = (target[i] + 1) % 10
    return plain, base, target


def make_store(tracker: Tracker) -> None:
    for method, accuracies in ACCURACY.items():
        for seed, accuracy in enumerate(accuracies):
            if accuracy is None:
                continue
            config = toy_config(method, seed=seed)
            _log(tracker, config, {"utility/accuracy": accuracy, "bandwidth/uplink_bytes": BYTES[method]})
    plain, base, target = _predictions()
    for method, predicted in (("plain", plain), ("base", base)):
        scores = classification("utility/accuracy", predicted=predicted, target=target, examples="digits-test")
        config = toy_config(method, knob=2.0, seed=0)
        _log(tracker, config, {"utility/accuracy": scores.value(), "bandwidth/uplink_bytes": 1.0}, [scores])


def claim(id: str, **fields) -> dict:  # noqa: A002, ANN003
    payload = Claim(id, paper="Toy et al. (2024)", statement=f"statement of {id}", quote=False,
                    **{"metric": "utility/accuracy", **fields}).to_json()
    return {**payload, "id": f"{FAMILY}.{id}", "task": FAMILY, "task_version": VERSION}


CLAIMS = [
    claim("good_beats_base", a={"method": "good"}, b={"method": "base"}, where={"knob": (1.0,)}),
    claim("good_beats_base_by_2_points", a={"method": "good"}, b={"method": "base"}, margin=0.02,
          where={"knob": (1.0,)}),
    claim("good_beats_base_by_6_points", a={"method": "good"}, b={"method": "base"}, margin=0.06,
          where={"knob": (1.0,)}),
    claim("bad_beats_base", a={"method": "bad"}, b={"method": "base"}),
    claim("same_beats_base", a={"method": "same"}, b={"method": "base"}),
    claim("lonely_beats_base", a={"method": "lonely"}, b={"method": "base"}, where={"knob": (1.0,)}),
    claim("good_compresses_32x", a={"method": "base"}, b={"method": "good"}, metric="bandwidth/uplink_bytes",
          effect="ratio", margin=32.0, where={"knob": (1.0,)}),
    claim("plain_beats_base_by_example", a={"method": "plain"}, b={"method": "base"}, where={"knob": (2.0,)}),
    claim("nobody_beats_base", a={"method": "good"}, b={"method": "base"}, where={"knob": (9.0,)}),
]


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory) -> Tracker:  # noqa: ANN001
    root = tmp_path_factory.mktemp("claims-store")
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}")
    make_store(tracker)
    return tracker


@pytest.fixture(scope="module")
def rows(toy_store: Tracker) -> dict[str, dict]:
    runs, schemas = collect(toy_store)
    _, out = judge(toy_store, runs, schemas, CLAIMS)
    return {r["id"].split(".", 1)[1]: r for r in out}


def test_every_verdict_agrees_with_its_interval_and_margin(rows: dict[str, dict]) -> None:
    for payload in CLAIMS:
        row = rows[payload["id"].split(".", 1)[1]]
        assert row["verdict"] == Claim.from_json(payload).verdict(row["ci_low"], row["ci_high"]), row["id"]
        if row["ci_low"] is not None:
            assert row["ci_low"] <= row["effect"] <= row["ci_high"]


def test_a_clear_gain_holds_and_a_margin_can_make_it_inconclusive(rows: dict[str, dict]) -> None:
    plain = rows["good_beats_base"]
    # three pairs (seeds 0-2), differences 0.06, 0.07, 0.05: mean 0.06, sd 0.01, Student t with 2 df
    half = 4.302652729911275 * 0.01 / 3 ** 0.5
    assert (plain["verdict"], plain["pairs"]) == ("holds", 3)
    assert plain["effect"] == pytest.approx(0.06)
    assert (plain["ci_low"], plain["ci_high"]) == pytest.approx((0.06 - half, 0.06 + half))
    assert rows["good_beats_base_by_2_points"]["verdict"] == "holds"  # 0.035 > 0.02
    assert rows["good_beats_base_by_6_points"]["verdict"] == "inconclusive"  # 0.06 lies inside [0.035, 0.085]


def test_the_opposite_is_contradicted_and_a_tie_is_inconclusive(rows: dict[str, dict]) -> None:
    assert rows["bad_beats_base"]["verdict"] == "contradicted"
    tie = rows["same_beats_base"]
    assert tie["verdict"] == "inconclusive" and tie["ci_low"] < 0 < tie["ci_high"]


def test_keys_set_by_one_side_are_not_paired_on(rows: dict[str, dict]) -> None:
    row = rows["good_beats_base"]
    assert row["not_paired_on"] == ["only_base"] and "knob" in row["paired_on"]


def test_missing_pairs_are_counted_not_invented(rows: dict[str, dict]) -> None:
    lonely = rows["lonely_beats_base"]
    assert lonely["pairs"] == 2 and lonely["unpaired_b"] == 1 and lonely["unpaired_a"] == 0
    # two pairs, differences 0.10 and 0.21: t with 1 degree of freedom is wide
    assert lonely["verdict"] == "inconclusive" and lonely["ci_low"] < 0
    assert any("unpaired" in r for r in lonely["remarks"])
    nobody = rows["nobody_beats_base"]
    assert (nobody["pairs"], nobody["verdict"], nobody["effect"], nobody["ci_low"]) == (0, "inconclusive", None, None)


def test_a_ratio_claim_with_a_margin(rows: dict[str, dict]) -> None:
    ratio = rows["good_compresses_32x"]
    assert (ratio["effect"], ratio["ci_low"], ratio["ci_high"]) == pytest.approx((32.0, 32.0, 32.0))
    # exactly 32x does not clear "more than 32x", nor its opposite
    assert ratio["verdict"] == "inconclusive"


def test_one_pair_with_predictions_gets_an_interval_over_test_examples(rows: dict[str, dict]) -> None:
    row = rows["plain_beats_base_by_example"]
    assert row["pairs"] == 1 and row["examples"] == N
    assert row["effect"] == pytest.approx((PLAIN_ONLY - BASE_ONLY) / N)
    assert row["verdict"] == "holds"
    assert row["mcnemar_p"] == pytest.approx(binomtest(BASE_ONLY, PLAIN_ONLY + BASE_ONLY, 0.5).pvalue)


def test_pairing_is_by_seed_and_every_other_key() -> None:
    def run(run_id: str, seed: int, method: str, eps: float, k: int) -> PairedRun:
        return PairedRun(run_id, seed, {"method": method, "eps": eps, "k": k})

    runs = [run("a0", 0, "x", 1.0, 3), run("a1", 1, "x", 1.0, 3), run("b0", 0, "y", 1.0, 3), run("b1", 1, "y", 1.0, 4),
            run("a2", 2, "x", 2.0, 3), run("a2b", 2, "x", 2.0, 5)]
    pairing = pair_runs(Claim("c", paper="p", statement="s", quote=False, a={"method": "x"}, b={"method": "y"},
                              metric="utility/accuracy"), runs)
    assert [(a.run_id, b.run_id) for a, b in pairing.pairs] == [("a0", "b0")]
    assert {r.run_id for r in pairing.unpaired_a} == {"a1", "a2", "a2b"}
    assert [r.run_id for r in pairing.unpaired_b] == ["b1"]
    # ignoring k: a1 pairs with b1, and a2 / a2b (which differ only in k) are ambiguous... but have no partner
    ignoring = pair_runs(Claim("c", paper="p", statement="s", quote=False, a={"method": "x"}, b={"method": "y"},
                               metric="utility/accuracy", ignore=("k",)), runs)
    assert [(a.run_id, b.run_id) for a, b in ignoring.pairs] == [("a0", "b0"), ("a1", "b1")]
    assert {r.run_id for r in ignoring.ambiguous} == {"a2", "a2b"}


def test_claims_are_checked_when_a_task_is_declared() -> None:
    with pytest.raises(ValueError, match="different values"):
        Claim("c", paper="p", statement="s", quote=True, a={"method": "x"}, b={"method": "x"},
              metric="utility/accuracy")
    with pytest.raises(ValueError, match="paired by seed"):
        Claim("c", paper="p", statement="s", quote=True, a={"method": "x", "seed": 1}, b={"method": "y"},
              metric="utility/accuracy")
    from suite.task import TASKS, Task, register_task
    from tests.toy.config import METHODS, ToyConfig

    bad = Claim("c", paper="p", statement="s", quote=True, a={"method": "ok"}, b={"method": "nope"},
                metric="utility/accuracy")
    with pytest.raises(TypeError, match=r"methods \['ok', 'nope'\] not all in"):
        @register_task("claimtoy_bad")
        class _Bad(Task):
            Config = ToyConfig
            method_registry = METHODS  # the toy's methods: ok, crash, nan, hang, noisy
            metrics = SCHEMA
            claims = (bad,)
    assert "claimtoy_bad" not in TASKS


def test_every_family_declares_its_papers_claims() -> None:
    ids = {c["id"] for c in declared_claims()}
    required = {"dpsgd.accuracy_rises_with_epsilon", "dpsgd.hooks_faster_than_functorch",
                "dpsgd.ghost_faster_than_functorch", "labeldp.alibi_beats_rr",
                "labeldp.pate_fm_beats_alibi_at_small_epsilon", "labeldp.pate_fm_beats_rr_at_small_epsilon",
                "labeldp.tighter_analysis_less_private", "fl.secagg_prune_compresses_32x",
                "fl.secagg_prune_within_2_points", "pruning.pruned_g_beats_b", "llm.fp8_rowwise_on_par_with_bf16"}
    assert required <= ids
    for c in declared_claims():
        assert c["paper"] and c["statement"] and c["task_version"] == discover().get(c["task"]).version


def test_the_site_has_claims_html_and_claims_json(toy_store: Tracker, tmp_path: Path) -> None:
    index = build_site(toy_store, tmp_path / "site", claims=CLAIMS)
    payload = json.loads((tmp_path / "site" / "data" / "claims.json").read_text())
    assert len(payload["claims"]) == len(CLAIMS)
    for row in payload["claims"]:
        assert set(REQUIRED) <= set(row)
    page = Page((tmp_path / "site" / "claims.html").read_text())
    config_links = [link for link in page.links if link.startswith("config/")]
    assert config_links and all((tmp_path / "site" / link).is_file() for link in config_links)
    assert "claims.html" in Page(index.read_text()).links
    again = tmp_path / "again"
    build_site(toy_store, again, claims=CLAIMS)
    for name in ("claims.html", "data/claims.json", f"tasks/{FAMILY}.html"):
        assert (again / name).read_bytes() == (tmp_path / "site" / name).read_bytes(), name


def test_family_pages_mark_a_tie_unless_the_best_is_significantly_better(toy_store: Tracker) -> None:
    runs, schemas = collect(toy_store)
    sections, _ = judge(toy_store, runs, schemas, [])
    section = next(s for s in sections if s.task == FAMILY)
    # the best accuracy mean (plain at knob 2, one seed) against the runner-up (lonely): one shared seed
    # and no per-example scores for lonely, so no interval: a tie
    assert "utility/accuracy" not in section.best and len(section.ties["utility/accuracy"]) == 2
    assert "not significantly better" in section.mark_notes["utility/accuracy"]


def test_suite_claims_prints_the_table_and_rejects_bad_input(tmp_path: Path) -> None:
    make_store(Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}"))
    done = suite_cli("claims", "labeldp", "--tier", "quick", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "labeldp.alibi_beats_rr" in done.stdout and "inconclusive" in done.stdout
    assert suite_cli("claims", "labeldpp", cwd=tmp_path).returncode == 2
    bad_tier = suite_cli("claims", "--tier", "medium", cwd=tmp_path)
    assert bad_tier.returncode == 2 and "unknown tier" in bad_tier.stdout + bad_tier.stderr


def test_recorded_examples_must_reproduce_the_runs_metric(store) -> None:  # noqa: ANN001
    """A run whose per-example predictions do not give its accuracy ends FAILED, with the reason;
    one whose predictions agree logs them as examples/utility.accuracy.json."""
    from runners.local import run_one
    from suite.examples import digest
    from suite.task import TASKS, RunContext, register_task
    from tests.toy.task import ToyTask

    @register_task("toyexamples")
    class _ToyExamples(ToyTask):
        @classmethod
        def config_dir(cls) -> Path:
            return ROOT / "tests" / "toy" / "configs"

        def run(self, config, ctx: RunContext) -> dict[str, float]:  # noqa: ANN001
            right = int(config.value * 4)  # of 4 test examples
            ctx.record_predictions("utility/accuracy", predicted=[1] * right + [0] * (4 - right), target=[1] * 4,
                                   examples=digest([0, 1, 2, 3]))
            return {"utility/accuracy": 0.5, "compute/steps": 0.0}

    try:
        task = discover().get("toyexamples")
        bad = run_one(task, "quick", task.resolve("quick", {"value": 0.75}), tracker=store)
        assert bad.status == "FAILED" and "per-example scores recorded for utility/accuracy give 0.75" in bad.reason
        good = run_one(task, "quick", task.resolve("quick", {"value": 0.5}), tracker=store)
        assert good.status == "FINISHED"
        payload = json.loads(Path(store.client.download_artifacts(good.run_id, "examples/utility.accuracy.json"))
                             .read_text())
        assert payload["predicted"] == [1, 1, 0, 0] and payload["value"] == 0.5
    finally:
        TASKS._items.pop("toyexamples", None)


@pytest.mark.parametrize("family", ["dpsgd", "labeldp", "fl", "pruning", "llm"])
def test_every_claim_pairs_the_quick_grid_without_ambiguity(family: str) -> None:
    """Over the quick grid's cells, each claim finds pairs and no two cells of one side share a partner
    (a claim that does not pin down one configuration per pair loses runs at judging time)."""
    from runners.sweep import plan
    from suite.task import get_task

    task = get_task(family)
    cells = plan([task], "quick")
    runs = [PairedRun(cell.hash, cell.config["seed"], cell.config) for cell in cells]
    for claim in task.claims:
        pairing = pair_runs(claim, runs)
        assert pairing.pairs, f"{family}.{claim.id}: no pair in the quick grid"
        assert not pairing.ambiguous, f"{family}.{claim.id}: cells sharing a partner: " \
                                      f"{[r.config for r in pairing.ambiguous]}"
