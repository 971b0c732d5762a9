"""The labeldp task end to end: configs refused before anything runs, each method through
``runners.cell.execute``, PATE-FM's queries fixed before any vote, the epsilon of the mechanism
that ran (a mechanism with no finite epsilon ends the run FAILED), and the one-run canary audit
catching planted bugs. The pure maths is in ``tests/test_labeldp_maths.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from runners.cell import Cell, execute
from suite import resolve
from suite.config import BaseConfig
from suite.errors import ConfigError
from suite.task import get_task
from tasks.labeldp import mechanisms as mech
from tests.conftest import suite_cli

# Four teachers leave no room for consensus: PATE's budget buys a few queries at eps 8 with noise 3.
TINY = {"epochs": 2, "teacher_epochs": 2, "n_teachers": 4, "max_queries": 30, "audit_canaries": 10,
        "audit_guesses": 4, "epsilon": 8.0, "threshold": 2.0, "sigma_threshold": 3.0, "sigma_gnmax": 3.0,
        "train_subset": 400}


def _config(*, tiny: bool = True, **over: object) -> BaseConfig:
    """The quick tier's config with ``over`` (keys of the method only); with ``tiny``, TINY's keys
    where the method has them (as a tier's smoke section applies)."""
    task = get_task("labeldp")
    return resolve.build(task, [resolve.lenient(task.tier("quick").defaults), resolve.lenient(TINY if tiny else {}),
                                resolve.strict(over)])


def _run(*, tiny: bool = True, **over: object) -> dict[str, float]:
    return execute(Cell.make(get_task("labeldp"), "quick", _config(tiny=tiny, **over)), threads=1).metrics


# --------------------------------------------------------------------------- configs


def test_each_method_has_its_own_keys_and_tags() -> None:
    task = get_task("labeldp")
    with pytest.raises(ConfigError, match="epsilon"):
        task.resolve("quick", {"method": "rr", "epsilon": None})
    with pytest.raises(ConfigError, match="delta"):
        task.resolve("quick", {"method": "pate_fm", "delta": None})
    with pytest.raises(ConfigError, match="methods that have it: alibi, pate_fm, rr, rr_prior"):
        task.resolve("quick", {"method": "nonprivate", "epsilon": 3.0})
    plain = task.resolve("quick", {"method": "nonprivate"})
    assert "epsilon" not in type(plain).model_fields and task().privacy_unit(plain) == "none"
    assert "delta" not in type(task.resolve("quick", {"method": "alibi"})).model_fields
    pate_only = {"n_teachers", "teacher_model", "student_labels", "spread_neighbors", "teacher_epochs",
                 "teacher_batch_size", "sigma_threshold", "sigma_gnmax", "threshold", "max_queries",
                 "pseudo_label_threshold", "pseudo_label_rounds"}
    holders = task.method_registry.holders()
    assert all(holders[key] == ["pate_fm"] for key in pate_only) and holders["stages"] == ["rr_prior"]
    for method, accountant in [("rr", "rr"), ("rr_prior", "rr-with-prior"), ("alibi", "laplace"),
                               ("pate_fm", "pate-rdp-data-independent")]:
        config = task.resolve("quick", {"method": method})
        tags = task().tags(config)
        assert tags["privacy.unit"] == "label" and tags["privacy.accountant"] == accountant
        assert tags.get("privacy.sampler") == ("none" if method == "pate_fm" else None)


def test_suite_show_lists_only_the_methods_keys_and_run_refuses_another_methods_key(tmp_path) -> None:
    shown = suite_cli("show", "labeldp", "--set", "method=alibi", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "epsilon" in shown.stdout and "n_teachers" not in shown.stdout and "stages" not in shown.stdout
    refused = suite_cli("run", "labeldp", "--set", "method=alibi", "--set", "n_teachers=10", cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "'n_teachers' is not a key of method alibi; methods that have it: pate_fm" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "mlflow.db").exists()


def test_the_split_sizes_the_config_checks_are_the_data_s() -> None:
    from suite import data
    from tasks.labeldp.config import N_CLASSES, TRAIN_SIZE

    digits = data.digits(split_seed=0)
    assert len(digits.y_train) == TRAIN_SIZE["digits"] and digits.n_classes == N_CLASSES["digits"]


BAD = [  # (overrides, the key the error must name, a phrase of the rule)
    ({"train_subset": 20}, "train_subset=20", "at least 10"),
    ({"train_subset": 40, "public_fraction": 0.1}, "public_fraction=0.1", "4 public"),
    ({"train_subset": 5000}, "train_subset=5000", "exceeds the 1437"),
    ({"train_subset": 100, "audit_canaries": 80}, "audit_canaries=80", "2 to 70"),
    ({"audit_canaries": 1}, "audit_canaries=1", "0 (none) or 2"),
    ({"audit_canaries": 10, "audit_guesses": 12}, "audit_guesses=12", "cannot exceed"),
    ({"method": "pate_fm", "train_subset": 60, "audit_canaries": 0}, "n_teachers=50", "42 private"),
    ({"method": "pate_fm", "train_subset": 100, "n_teachers": 4, "audit_canaries": 0, "spread_neighbors": 100},
     "spread_neighbors=100", "below the 100"),
    ({"method": "rr_prior", "train_subset": 40, "audit_canaries": 0, "stages": 30}, "stages=30", "28 private"),
    ({"method": "rr", "epsilon": 50}, "epsilon=50", "above 20"),
    ({"method": "pate_fm", "epsilon": 21}, "epsilon=21", "above 20"),
    ({"method": "rr", "stages": 3}, "'stages' is not a key of method rr", "methods that have it: rr_prior"),
    ({"method": "alibi", "epsilon": "inf"}, "epsilon", "finite"),
    ({"lr": "nan"}, "lr", "finite"),
    ({"model": "resnet18"}, "model=resnet18", "digits_cnn"),
    ({"augment": True}, "augment=true", "cifar10 only"),
]


@pytest.mark.parametrize(("over", "key", "rule"), BAD, ids=[b[1] for b in BAD])
def test_configs_that_cannot_run_are_refused_when_read(over: dict, key: str, rule: str) -> None:
    with pytest.raises(ConfigError) as err:
        get_task("labeldp").resolve("quick", over)
    assert key in str(err.value) and rule in str(err.value)


def test_a_config_too_small_for_its_split_exits_2_and_writes_nothing(tmp_path) -> None:
    result = suite_cli("run", "labeldp", "--set", "train_subset=30", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "train_subset=30" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_the_smallest_split_the_config_allows_runs() -> None:
    """The edge of the rules runs: 10 public and 10 private examples, classes too rare to stratify."""
    m = _run(tiny=False, method="pate_fm", train_subset=20, public_fraction=0.5, n_teachers=10, spread_neighbors=7,
             audit_canaries=10, epochs=1, epsilon=8.0, threshold=2.0, sigma_threshold=6.0, sigma_gnmax=6.0)
    assert m["privacy/queries_asked"] == 10  # the budget buys 29, the public set has 10


# --------------------------------------------------------------------------- each method


@pytest.mark.parametrize("method", ["nonprivate", "rr", "rr_prior", "alibi", "pate_fm"])
def test_each_method_runs_end_to_end(method: str) -> None:
    m = _run(method=method)
    assert 0 <= m["utility/accuracy"] <= 1 and m["compute/params"] > 0
    assert m["compute/model_bytes"] == 4 * m["compute/params"]  # float32, no buffers
    assert m["privacy/audit_canaries"] == 10 and m["privacy/audit_guesses"] == 4
    assert 0 <= m["privacy/audit_correct"] <= 4 and m["privacy/audit_epsilon_lb"] >= 0
    if method == "nonprivate":
        assert "privacy/epsilon" not in m
        return
    if method == "pate_fm":
        assert 0 < m["privacy/epsilon"] <= 8.0 and m["privacy/delta"] == 1e-5
        assert m["privacy/epsilon_data_dependent"] <= m["privacy/epsilon"]
        assert m["privacy/epsilon_rdp"] == pytest.approx(m["privacy/epsilon"], rel=0.02)
        assert m["privacy/epsilon_pld"] < m["privacy/epsilon"]
        assert 0 < m["privacy/queries_answered"] <= m["privacy/queries_asked"] <= 30
        assert m["privacy/sigma_gnmax"] == 3.0 and m["privacy/threshold"] == 2.0
    else:
        assert m["privacy/epsilon"] == pytest.approx(8.0, rel=1e-9)
    if method == "rr":
        assert m["privacy/rr_flip_probability"] == pytest.approx(1 - math.exp(8) / (math.exp(8) + 9))
    if method == "alibi":
        assert m["privacy/laplace_scale"] == pytest.approx(0.25)
    if method == "rr_prior":
        assert 1 <= m["privacy/rr_prior_mean_k"] <= 10


def test_pate_semi_supervised_teachers_beat_supervised_ones_and_both_paths_run() -> None:
    """Label spreading over all (public) features is why the quick tier's teachers are usable;
    the supervised CNN teachers and pseudo-labelled student are the full tier's path."""
    runs = {teacher: _run(method="pate_fm", teacher_model=teacher, student_labels=student)
            for teacher, student in [("label_spreading", "label_spreading"), ("cnn", "pseudo_label")]}
    assert runs["label_spreading"]["utility/teacher_accuracy"] > runs["cnn"]["utility/teacher_accuracy"] + 0.1
    assert all(0 < m["privacy/queries_answered"] and 0 <= m["utility/accuracy"] <= 1 for m in runs.values())


# --------------------------------------------------------------------------- PATE-FM's queries


def test_pate_asks_the_same_queries_whatever_the_votes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unanimous teachers and teachers split down the middle: one config asks the same public
    examples, in the same order; only the answers (and how many pass the threshold) differ."""
    from tasks.labeldp import pate_fm

    asked, answered = [], []
    real_answer = pate_fm.answer_queries

    def spy(config, votes, plan):
        queries = real_answer(config, votes, plan)
        asked.append(queries.asked.copy())
        answered.append(int(queries.answered.sum()))
        return queries

    def votes_of(kind: str):
        def fake(config, split, ctx):
            votes = np.zeros((len(split.public_x), split.n_classes))
            if kind == "unanimous":
                votes[:, 3] = config.n_teachers
            else:
                votes[:, :2] = config.n_teachers / 2
            return votes, 0.5, False
        return fake

    monkeypatch.setattr(pate_fm, "answer_queries", spy)
    metrics = []
    for kind in ("unanimous", "split"):
        monkeypatch.setattr(pate_fm, "_teacher_votes", votes_of(kind))
        metrics.append(_run(method="pate_fm", epochs=1, threshold=3.0))
    np.testing.assert_array_equal(asked[0], asked[1])
    assert len(asked[0]) == metrics[0]["privacy/queries_asked"] == metrics[1]["privacy/queries_asked"] > 0
    assert metrics[0]["privacy/epsilon"] == metrics[1]["privacy/epsilon"]
    assert answered[0] > answered[1]  # 4 votes clear the threshold 3 more often than 2 do


def test_pate_query_count_is_the_same_for_every_seed_and_the_budget_is_respected() -> None:
    from tasks.labeldp import pate, pate_fm

    task = get_task("labeldp")
    for eps in (0.5, 1.0, 2.0, 4.0, 8.0):
        configs = [task.resolve("quick", {"method": "pate_fm", "epsilon": eps, "seed": s}) for s in range(3)]
        plans = [pate_fm.query_plan(c, n_public=432) for c in configs]  # the quick tier's public set
        assert len({len(plan) for plan in plans}) == 1
        assert len({tuple(plan) for plan in plans}) == (3 if len(plans[0]) else 1)  # which ones: seeded
        c = configs[0]
        assert pate.data_independent_epsilon(queries=len(plans[0]), sigma_threshold=c.sigma_threshold,
                                             sigma_gnmax=c.sigma_gnmax, delta=c.delta) <= eps


# --------------------------------------------------------------------------- epsilon from the mechanism


def test_randomized_response_that_never_flips_ends_failed_with_the_reason(store, monkeypatch) -> None:
    """The whole path: the channel it sampled from has epsilon inf, the run stops before
    training, and the store holds a FAILED run that says why (and no FINISHED one)."""
    from runners.local import run_one

    task = get_task("labeldp")
    config = _config(method="rr", epsilon=0.5)
    monkeypatch.setattr(mech, "rr_channel", lambda *, epsilon, k: np.eye(k))
    outcome = run_one(task, "quick", config, tracker=store)
    assert outcome.status == "FAILED"
    run = store.run(outcome.run_id)
    assert run.status == "FAILED" and "compute/train_s" not in run.metrics
    reason = run.tags["suite.failure_reason"]
    assert "NoFiniteGuarantee" in reason and "epsilon = inf" in reason and "labeldp rr" in reason
    assert not store.runs("labeldp", status="FINISHED")


@pytest.mark.parametrize(("method", "target", "planted"), [
    ("rr_prior", "rr_prior_channels", lambda priors, *, epsilon: np.tile(np.eye(priors.shape[1]), (len(priors), 1, 1))),
    ("alibi", "alibi_scale", lambda *, epsilon: 0.0),
])
def test_other_mechanisms_without_noise_report_no_finite_epsilon(method, target, planted, monkeypatch) -> None:
    from tasks.labeldp.mechanisms import NoFiniteGuarantee

    monkeypatch.setattr(mech, target, planted)
    with pytest.raises(NoFiniteGuarantee, match="epsilon = inf"):
        _run(method=method)


def test_a_leaky_rr_with_prior_stage_reports_its_real_epsilon(monkeypatch) -> None:
    """Stage 1's channels built for twice the target: the run reports the larger epsilon it sampled with."""
    real = mech.rr_prior_channels
    monkeypatch.setattr(mech, "rr_prior_channels", lambda priors, *, epsilon: real(priors, epsilon=2 * epsilon))
    m = _run(method="rr_prior", epsilon=1.0)
    assert m["privacy/epsilon"] == pytest.approx(2.0, rel=1e-9)


# --------------------------------------------------------------------------- the audit


def test_canaries_are_planted_independently_with_probability_one_half() -> None:
    from tasks.labeldp.train import plant_canaries

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=500)
    planted = []
    for seed in range(200):
        mine = labels.copy()
        c = plant_canaries(mine, m=40, n_classes=10, rng=np.random.default_rng(seed))
        assert len(set(c.index)) == 40 and (c.wrong_label != c.true_label).all()
        assert (mine[c.index] == np.where(c.planted, c.wrong_label, c.true_label)).all()
        rest = np.setdiff1d(np.arange(500), c.index)
        assert (mine[rest] == labels[rest]).all()
        planted.append(c.planted)
    rate = np.mean(planted)
    assert abs(rate - 0.5) < 0.02  # 8,000 coins
    counts = np.sum(planted, axis=1)
    assert counts.min() < 20 < counts.max()  # not exactly half per run: each canary is its own coin


def test_audit_catches_a_sampler_that_ignores_its_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reported epsilon reads the channel; a sampler that returns every label unchanged
    still reports 0.5. The one-run audit must expose it, and stay below the claim when honest."""
    over = {"method": "rr", "epsilon": 0.5, "train_subset": 600, "audit_canaries": 80, "audit_guesses": 40}
    honest = _run(tiny=False, **over)
    assert honest["privacy/audit_epsilon_lb"] < honest["privacy/epsilon"] == pytest.approx(0.5)
    monkeypatch.setattr(mech, "sample_channel", lambda labels, channel, *, rng: np.asarray(labels).copy())
    broken = _run(tiny=False, **over)
    assert broken["privacy/epsilon"] == pytest.approx(0.5)
    assert broken["privacy/audit_epsilon_lb"] > broken["privacy/epsilon"]
# --------------------------------------------------------------------------- teacher-vote cache


def test_cache_hits_misses_on_a_different_key_and_recomputes_a_corrupt_file(tmp_path) -> None:
    from suite.cache import cached_arrays

    calls = []

    def compute(value: float, rows: int = 3):
        def run():
            calls.append(value)
            return {"votes": np.full((rows, 2), value), "acc": np.asarray(value)}
        return run

    shapes = {"votes": (3, 2), "acc": ()}
    labels = np.array([0, 1, 1])
    first = cached_arrays({"labels": labels}, compute(1.0), shapes=shapes, root=tmp_path)
    hit = cached_arrays({"labels": labels.copy()}, compute(2.0), shapes=shapes, root=tmp_path)
    assert (first.hit, hit.hit) == (False, True) and calls == [1.0]
    np.testing.assert_array_equal(hit.arrays["votes"], first.arrays["votes"])
    # One label changed (as a different canary would) is a different key.
    other = cached_arrays({"labels": np.array([0, 1, 2])}, compute(3.0), shapes=shapes, root=tmp_path)
    assert not other.hit and other.path != first.path and calls == [1.0, 3.0]
    # A truncated file, and one holding the wrong shape, are recomputed and replaced.
    first.path.write_bytes(first.path.read_bytes()[:40])
    again = cached_arrays({"labels": labels}, compute(4.0), shapes=shapes, root=tmp_path)
    assert not again.hit and calls[-1] == 4.0
    wrong = cached_arrays({"labels": labels}, compute(5.0, rows=4), shapes={"votes": (4, 2), "acc": ()}, root=tmp_path)
    assert not wrong.hit and wrong.arrays["votes"].shape == (4, 2)
    assert cached_arrays({"labels": labels}, compute(6.0, rows=4), shapes={"votes": (4, 2), "acc": ()}, root=tmp_path).hit


def test_pate_run_is_identical_whether_its_teacher_votes_are_cached(tmp_path, monkeypatch) -> None:
    """The second cell reads the votes the first one trained; only compute/* may differ. A
    different seed plants other canaries and partitions otherwise: it must train its own."""
    monkeypatch.setenv("SUITE_CACHE", str(tmp_path))
    task = get_task("labeldp")

    def run(**over):
        config = _config(method="pate_fm", **over)
        return execute(Cell.make(task, "quick", config), threads=1).metrics

    fresh, cached, other_eps, other_seed = run(), run(), run(epsilon=4.0), run(seed=1)
    assert fresh["compute/teachers_cached"] == 0 and cached["compute/teachers_cached"] == 1
    assert other_eps["compute/teachers_cached"] == 1 and other_seed["compute/teachers_cached"] == 0
    same = {k: v for k, v in fresh.items() if not k.startswith("compute/")}
    assert same == {k: v for k, v in cached.items() if not k.startswith("compute/")}
    assert other_eps["utility/teacher_accuracy"] == fresh["utility/teacher_accuracy"]


