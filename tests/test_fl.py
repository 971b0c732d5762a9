"""The fl family: codecs, configs, and compressed SecAgg+ exactness under dropouts.

The SecAgg+ tests drive the real ServerApp (Flower's DefaultWorkflow + the compressed SecAgg+
workflow) and real ClientApps (Flower's NumPyClient + the compressed SecAgg+ mod) through an
in-process Grid, so that many dropout cases run in seconds without starting Ray; the
conformance test and the sweep test run the same apps on the Simulation Engine.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from tasks.fl.codecs import (
    OverflowConfigError, RandomMaskPruner, ScalarQuantizer, SecureIndexer, check_field, field_bits, pack,
    pq_codebook, stochastic_quantize, unpack)
from tasks.fl.task import FLTask
from tests.fl_loopback import federate, fixed_clients, server_process  # noqa: F401 - server_process is a fixture


# -- codecs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1, 3, 4, 8, 13, 33])
def test_pack_round_trips_at_exactly_the_field_width(bits: int) -> None:
    values = np.random.default_rng(bits).integers(0, 2**bits, size=1001)
    data = pack(values, bits)
    assert len(data) == -(-1001 * bits // 8)
    np.testing.assert_array_equal(unpack(data, bits, 1001), values)


def test_pack_refuses_a_value_wider_than_the_field() -> None:
    with pytest.raises(ValueError, match="does not fit in 4 bits"):
        pack(np.array([16]), 4)


def test_field_is_the_narrowest_that_holds_the_round_sum() -> None:
    assert field_bits(1, 10) == 4  # 10 one-bit values sum to at most 10 < 16
    assert field_bits(255, 10) == 12  # 2550 < 4096
    check_field(15, 10, 8)  # 150 < 256
    with pytest.raises(OverflowConfigError, match="overflows: 10 clients x 15 .* use at least 8 bits"):
        check_field(15, 10, 7)


def test_stochastic_quantization_is_unbiased_and_in_range() -> None:
    rng = np.random.default_rng(0)
    x = np.full(200_000, 0.013, dtype=np.float32)
    q = stochastic_quantize(x, r=0.05, levels=1, rng=rng)
    assert set(np.unique(q)) == {0, 1}
    mean = ScalarQuantizer(1, 0.05).decode(q.sum(keepdims=True), len(q), 1)[0]
    assert mean == pytest.approx(0.013, abs=5e-4)


def test_the_sum_of_encodings_decodes_to_the_mean_of_decodings() -> None:
    rng = np.random.default_rng(1)
    deltas = [rng.normal(0, 0.02, 50).astype(np.float32) for _ in range(7)]
    books = tuple(pq_codebook(rng.normal(0, 0.02, n), block=8, codewords=5, iters=3, rng=rng) for n in (30, 20))
    for codec in (ScalarQuantizer(2, 0.05), RandomMaskPruner(0.3, 5, 4, 0.05), SecureIndexer(books, (30, 20))):
        codes = [codec.encode(d, np.random.default_rng(i)) for i, d in enumerate(deltas)]
        assert all(c.min() >= 0 and c.max() <= codec.max_value() and c.size == codec.length(50) for c in codes)
        individual = np.mean([codec.decode(c, 1, 50) for c in codes], axis=0)
        np.testing.assert_allclose(codec.decode(np.sum(codes, axis=0), 7, 50), individual, atol=1e-6)


def test_pq_codebooks_pair_each_direction_with_its_negation_and_end_with_zero() -> None:
    rng = np.random.default_rng(2)
    book = pq_codebook(rng.normal(0, 0.01, 400), block=8, codewords=7, iters=3, rng=rng)
    assert book.shape == (7, 8)
    np.testing.assert_array_equal(book[3:6], -book[:3])
    assert not book[-1].any() and (np.abs(book[:3]).sum(1) > 0).all()
    with pytest.raises(ValueError, match="odd number"):
        pq_codebook(np.zeros(16), block=8, codewords=4, iters=1, rng=rng)


def test_secure_indexing_feeds_back_what_the_codewords_missed() -> None:
    """With error feedback, what a client's codewords sent over T rounds is T updates less one residual,
    and the residual stays small because each round's codebooks bring fresh directions."""
    from flwr.app import Context, RecordDict

    from tasks.fl.rounds import RoundPlan, codec_from_config
    from tasks.fl.secure import RESIDUAL_KEY, _encode, commit_residual

    rng = np.random.default_rng(4)
    plan = RoundPlan(codec_kind="pq", seed=1, dim=96, clients_per_round=4, pq_codewords=5, pq_block=4,
                     pq_warmup=0, segments=(64, 32))
    aggregate = rng.normal(0, 0.01, 96).astype(np.float32)
    delta = rng.normal(0, 0.004, 96).astype(np.float32)
    ctxt = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    sent = np.zeros(96)
    for rnd in range(1, 51):
        plan.record_aggregate(rnd - 1, aggregate)
        cfg = plan.fit_config(rnd)
        sent += codec_from_config(cfg).decode(_encode(delta, cfg, 7, ctxt), 1, 96)
        commit_residual(ctxt)  # the update was aggregated (the node was asked to unmask)
    residual = np.frombuffer(ctxt.state.config_records[RESIDUAL_KEY]["residual"], dtype=np.float32)
    np.testing.assert_allclose(sent + residual, 50 * delta, atol=1e-4)
    assert np.linalg.norm(residual) < 0.2 * np.linalg.norm(50 * delta)


def test_a_residual_is_kept_only_once_the_update_was_aggregated() -> None:
    """A client that encoded an update and then dropped out keeps the residual it had."""
    from flwr.app import Context, RecordDict

    from tasks.fl.rounds import RoundPlan
    from tasks.fl.secure import RESIDUAL_KEY, _encode, commit_residual

    plan = RoundPlan(codec_kind="pq", seed=1, dim=32, clients_per_round=4, pq_codewords=5, pq_block=4, pq_warmup=0)
    plan.record_aggregate(0, np.random.default_rng(0).normal(0, 0.01, 32).astype(np.float32))
    ctxt = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    delta = np.random.default_rng(1).normal(0, 0.004, 32).astype(np.float32)
    _encode(delta, plan.fit_config(1), 7, ctxt)
    assert RESIDUAL_KEY not in ctxt.state.config_records  # encoded, not yet known to be aggregated
    commit_residual(ctxt)
    kept = ctxt.state.config_records[RESIDUAL_KEY]["residual"]
    plan.record_aggregate(1, np.random.default_rng(2).normal(0, 0.01, 32).astype(np.float32))
    _encode(delta, plan.fit_config(2), 7, ctxt)  # round 2: encoded, then the client drops out
    assert ctxt.state.config_records[RESIDUAL_KEY]["residual"] == kept


def test_pruning_mask_is_shared_and_seeded_by_the_server() -> None:
    a, b = RandomMaskPruner(0.1, 3, 1, 0.05), RandomMaskPruner(0.1, 4, 1, 0.05)
    delta = np.ones(1000, dtype=np.float32)
    assert a.length(1000) == 100
    kept_a = np.flatnonzero(a.decode(a.encode(delta, np.random.default_rng(0)), 1, 1000))
    assert np.array_equal(kept_a, np.flatnonzero(a.decode(a.encode(delta, np.random.default_rng(9)), 1, 1000)))
    assert not np.array_equal(kept_a, np.flatnonzero(b.decode(b.encode(delta, np.random.default_rng(0)), 1, 1000)))


# -- configs -----------------------------------------------------------------------------------


def fl_config(**values):  # type: ignore[no-untyped-def]
    """The config of ``values["method"]`` (its own class: a key of another method is refused)."""
    return FLTask.config_model(values["method"])(**values)


def test_a_field_that_would_overflow_is_rejected_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="6-bit field overflows: 10 clients x 15"):
        fl_config(method="secagg_sq", bits=4, clients_per_round=10, field_bits=6)
    assert fl_config(method="secagg_sq", bits=4, clients_per_round=10, field_bits=8).field_bits == 8


def test_a_method_has_only_its_own_keys() -> None:
    with pytest.raises(ValidationError, match="keep"):
        fl_config(method="secagg_sq", keep=0.5)
    with pytest.raises(ValidationError, match="epsilon"):
        fl_config(method="fedavg", epsilon=2.0)
    assert "weighting" not in FLTask.config_model("dp").model_fields  # dp's clients weigh 1 each
    assert set(FLTask.config_model("fedavg").model_fields) < set(FLTask.config_model("secagg").model_fields)


def test_dp_needs_delta_clip_and_exactly_one_of_epsilon_and_noise() -> None:
    with pytest.raises(ValidationError, match="either a target epsilon .* or a noise_multiplier, not both"):
        fl_config(method="dp", epsilon=2.0, noise_multiplier=1.0, delta=1e-3, clip_norm=0.5)
    with pytest.raises(ValidationError, match="either a target epsilon"):
        fl_config(method="dp", delta=1e-3, clip_norm=0.5)
    with pytest.raises(ValidationError, match="delta\n  Field required"):
        fl_config(method="dp", epsilon=2.0, clip_norm=0.5)
    with pytest.raises(ValidationError, match="clip_norm\n  Field required"):
        fl_config(method="dp", epsilon=2.0, delta=1e-3)


@pytest.mark.parametrize("given", [{"epsilon": 4.0}, {"noise_multiplier": 1.3}], ids=["target", "noise"])
def test_dp_epsilon_is_the_accountants_for_the_runs_noise_rate_and_rounds(given: dict) -> None:
    from suite.privacy import dpsgd_epsilon
    from tasks.fl.config import method_of

    config = fl_config(method="dp", delta=1e-3, clip_norm=0.5, num_clients=20, clients_per_round=10, rounds=30, **given)
    sigma = method_of(config).noise_multiplier(config)
    logged = method_of(config).privacy_metrics(config, noise_multiplier=sigma)
    assert logged["privacy/sample_rate"] == 0.5 and logged["privacy/steps"] == 30
    for accountant in ("rdp", "prv", "pld"):  # the same Poisson-subsampled Gaussian under each accountant
        assert logged[f"privacy/epsilon_{accountant}"] == dpsgd_epsilon(
            history=[(sigma, 0.5, 30)], delta=1e-3, accountant=accountant, sampler="poisson")
    assert logged["privacy/epsilon"] == logged["privacy/epsilon_rdp"]
    assert logged["privacy/epsilon_pld"] == pytest.approx(logged["privacy/epsilon_prv"], rel=0.05)
    assert logged["privacy/epsilon_pld"] < logged["privacy/epsilon_rdp"]
    if "epsilon" in given:  # calibrated: the least noise that stays within the target
        assert 0.95 * 4.0 <= logged["privacy/epsilon"] <= 4.0
        assert dpsgd_epsilon(history=[(0.9 * sigma, 0.5, 30)], delta=1e-3, accountant="rdp") > 4.0
    else:
        assert sigma == 1.3


@pytest.mark.slow
def test_a_dp_run_logs_the_accountants_epsilon_and_the_client_unit(tmp_path) -> None:
    import mlflow

    from suite.privacy import dpsgd_epsilon
    from tests.conftest import suite_cli

    smoke = FLTask.tier("quick").smoke
    args = [f"--set={k}={v}" for k, v in {**smoke, "method": "dp", "epsilon": 3.0}.items() if not isinstance(v, list)]
    done = suite_cli("run", "fl", *args, "--set=hidden=[16]", cwd=tmp_path, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = mlflow.search_runs(experiment_names=["fl"], output_format="list")
    m = run.data.metrics
    assert run.data.tags["privacy.unit"] == "client" and run.data.tags["privacy.sampler"] == "poisson"
    assert {"privacy/epsilon_rdp", "privacy/epsilon_prv", "privacy/epsilon_pld"} <= set(m)
    assert m["privacy/sample_rate"] == smoke["clients_per_round"] / smoke["num_clients"] and m["privacy/steps"] == smoke["rounds"]
    assert m["privacy/epsilon"] == pytest.approx(dpsgd_epsilon(
        history=[(m["privacy/noise_multiplier"], m["privacy/sample_rate"], smoke["rounds"])], delta=1e-3, accountant="rdp"))
    assert m["privacy/epsilon"] <= 3.0


def test_the_benchmark_table_never_averages_two_settings() -> None:
    from benchmarks.fl import baseline_of, group_settings, label, target

    def run(method: str, seed: int, acc: float, **keys: object):  # type: ignore[no-untyped-def]
        params = {"method": method, "seed": str(seed), "weighting": "uniform", "keep": "None", "dataset": "digits",
                  **{k: str(v) for k, v in keys.items()}}
        return params, {"utility/accuracy": acc, "bandwidth/compression": 1.0 if method == "fedavg" else 40.0}

    rows = [run("fedavg", 0, 0.90), run("fedavg", 1, 0.92), run("fedavg", 0, 0.80, weighting="examples"),
            run("secagg_prune", 0, 0.89, keep=0.15), run("secagg_prune", 1, 0.91, keep=0.15),
            run("secagg_prune", 0, 0.70, keep=0.15, weighting="examples"), run("secagg_prune", 0, 0.5, keep=0.3)]
    groups = group_settings(rows)
    assert sorted(label(s) for s in groups) == [
        "fedavg weighting=examples", "fedavg weighting=uniform", "secagg_prune keep=0.15 weighting=examples",
        "secagg_prune keep=0.15 weighting=uniform", "secagg_prune keep=0.3 weighting=uniform"]
    prune = next(s for s in groups if label(s) == "secagg_prune keep=0.15 weighting=uniform")
    assert label(baseline_of(prune, groups)) == "fedavg weighting=uniform"
    text, holds = target(groups[prune], groups[baseline_of(prune, groups)])
    assert holds and "paired over 2 seeds -0.0100" in text
    examples = next(s for s in groups if label(s) == "secagg_prune keep=0.15 weighting=examples")
    assert not target(groups[examples], groups[baseline_of(examples, groups)])[1]  # 0.70 vs 0.80


@pytest.mark.parametrize("tier", ["quick", "full"])
def test_every_cell_of_both_tiers_resolves(tier: str) -> None:
    from suite.config import expand_grid

    spec = FLTask.tier(tier)
    cells = [FLTask.resolve(tier, cell) for cell in expand_grid(spec.grid)]
    assert {c.method for c in cells} == set(FLTask.methods())
    assert FLTask.resolve(tier, spec.smoke)


# -- SecAgg+ exactness under dropouts, through the real apps -------------------------------------

N_CLIENTS, THRESHOLD, DIM = 5, 3, 40


def secagg_round(method_kw: dict, dropped: set[int], weights: dict[int, int] | None = None,  # type: ignore[no-untyped-def]
                 dim: int = DIM):
    """One round of compressed SecAgg+ over N_CLIENTS fixed client updates.

    Returns the ServerRecord, the loopback grid, the updates, the plan and the new global weights.
    """
    from tasks.fl.rounds import RoundPlan
    from tasks.fl.secure import compressed_secaggplus_mod

    rng = np.random.default_rng(0)
    updates = {p: rng.normal(0, 0.03, dim).astype(np.float32) for p in range(N_CLIENTS)}
    weights = weights or dict.fromkeys(updates, 1)
    cap = max(weights.values())
    kw = {k: v for k, v in method_kw.items() if k != "codec_kind"}
    weighting = {"weighting": "uniform"} if cap == 1 else {"weighting": "examples", "max_weight": cap}
    config = fl_config(method="secagg_" + method_kw["codec_kind"], seed=3, num_clients=N_CLIENTS,
                       clients_per_round=N_CLIENTS, rounds=1, num_shares=1.0, threshold=float(THRESHOLD),
                       **weighting, **kw)
    plan = RoundPlan(seed=3, dim=dim, clients_per_round=N_CLIENTS, pq_warmup=0, max_weight=cap, **method_kw)
    plan.record_aggregate(0, rng.normal(0, 0.03, dim).astype(np.float32))  # what a pq codebook is learned from
    clients = fixed_clients(updates, weights, dropped, [compressed_secaggplus_mod])
    record, grid, evaluated = federate(config, clients, initial=[np.zeros(dim, dtype=np.float32)], plan=plan)
    return record, grid, updates, plan, evaluated[-1][0]


def plaintext(plan, updates: dict[int, np.ndarray], weight: int, partition: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """What one client masks: its weighted encoding, then its weight."""
    code = plan.codec(1).encode(updates[partition], np.random.default_rng([3, 1, partition]))
    return np.append(code * weight, weight)


CODECS = [{"codec_kind": "sq", "bits": 2, "range": 0.05},
          {"codec_kind": "prune", "bits": 1, "range": 0.05, "keep": 0.5},
          {"codec_kind": "pq", "range": 0.05, "pq_codewords": 5, "pq_block": 4}]


@pytest.mark.parametrize("method_kw", CODECS, ids=[c["codec_kind"] for c in CODECS])
@pytest.mark.parametrize("n_dropped", range(N_CLIENTS - THRESHOLD + 1))
def test_masked_sum_equals_the_plaintext_sum_of_the_survivors(method_kw: dict, n_dropped: int, server_process) -> None:
    dropped = set(range(n_dropped))
    record, _, updates, plan, new_global = secagg_round(method_kw, dropped)
    survivors = set(updates) - dropped
    workflow = record.workflow
    assert {record.strategy.partition_of[n] for n in workflow.last_survivors} == survivors
    expected = sum(plaintext(plan, updates, 1, p) for p in survivors)
    np.testing.assert_array_equal(workflow.last_sum, expected)
    # ... and the new global model (from zeros) is the decoded mean of exactly those updates
    codec = plan.codec(1)
    np.testing.assert_allclose(new_global, codec.decode(expected[:-1], len(survivors), DIM), atol=1e-6)
    assert record.error is None


@pytest.mark.parametrize("method_kw", CODECS, ids=[c["codec_kind"] for c in CODECS])
def test_examples_weighting_under_secagg_decodes_the_weighted_mean(method_kw: dict, server_process) -> None:
    weights = {0: 3, 1: 16, 2: 1, 3: 7, 4: 9}
    record, _, updates, plan, new_global = secagg_round(method_kw, {4}, weights)
    codec, survivors = plan.codec(1), [0, 1, 2, 3]
    expected = sum(plaintext(plan, updates, weights[p], p) for p in survivors)
    np.testing.assert_array_equal(record.workflow.last_sum, expected)
    assert expected[-1] == 27  # the survivors' weights, learned only as their sum
    decoded = {p: codec.decode(plaintext(plan, updates, 1, p)[:-1], 1, DIM) for p in survivors}
    weighted = sum(weights[p] * decoded[p] for p in survivors) / 27
    np.testing.assert_allclose(new_global, weighted, atol=1e-6)
    # widened by log2(16) bits: the field holds 5 clients x 16 (weight) x the codec's largest integer
    largest = plan.codec(1).max_value()
    assert plan.field_bits == field_bits(16 * largest, 5) == field_bits(largest, 5) + 4
    assert not np.allclose(new_global, np.mean([decoded[p] for p in survivors], axis=0), atol=1e-4)


@pytest.mark.parametrize("method_kw", CODECS[:1], ids=["sq"])
def test_fewer_survivors_than_the_threshold_abort_the_round(method_kw: dict, server_process) -> None:
    from tasks.fl.secure import SecAggAbort

    with pytest.raises(SecAggAbort, match="fewer than the reconstruction threshold 3"):
        secagg_round(method_kw, set(range(N_CLIENTS - THRESHOLD + 1)))


def _masked_vectors(grid, plan, dim: int) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

    from tasks.fl.codecs import unpack

    length = plan.codec(1).length(dim) + 1
    return [unpack(r.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS][0], plan.field_bits, length)
            for r in grid.replies if not r.has_error() and RECORD_KEY_CONFIGS in r.content.config_records
            and Key.MASKED_PARAMETERS in r.content.config_records[RECORD_KEY_CONFIGS]]


def test_a_masked_vector_is_uniform_over_the_field_and_not_the_plaintext(server_process) -> None:
    """What the server receives from each client: indistinguishable from uniform noise in the field.

    1-bit codes (0 or 1) in a 3-bit field: unmasked, they fill 2 of the 8 values; masked, all
    8 equally often (chi-square against uniform over the field, 4,001 values a client).
    """
    from scipy.stats import chisquare

    dim = 4000
    _, grid, updates, plan, _ = secagg_round({"codec_kind": "sq", "bits": 1, "range": 0.05}, set(), dim=dim)
    received = _masked_vectors(grid, plan, dim)
    assert len(received) == N_CLIENTS and plan.field_bits == 3
    size = 2**plan.field_bits
    for vector in received:
        assert not any(np.array_equal(vector, plaintext(plan, updates, 1, p)) for p in updates)
        assert chisquare(np.bincount(vector, minlength=size)).pvalue > 1e-4
    # the test can tell: the plaintext encodings themselves are far from uniform
    assert chisquare(np.bincount(plaintext(plan, updates, 1, 0), minlength=size)).pvalue < 1e-12
