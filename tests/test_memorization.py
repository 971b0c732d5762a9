"""The memorization family: exposure maths, planting, scoring, training (real transformers and Opacus).

Models here are tiny Llamas (real transformers classes) so that every check runs in seconds; the
full tier's path runs on a tiny checkpoint written to a temporary directory.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from suite.errors import ConfigError
from suite.task import get_task
from tasks.memorization import canaries as planting
from tasks.memorization import corpus
from tasks.memorization.exposure import fitted_exposure, rank_exposure
from tasks.memorization.score import continuation_logprobs, greedy_matches
from tests.conftest import suite_cli

LOG2E = 1 / math.log(2)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (as the tier's cells do); more only contend on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(**overrides):
    task = get_task("memorization")
    return task.resolve("quick", {**task.tier("quick").smoke, **overrides})


@pytest.fixture(scope="module")
def tokenizer():
    train, _ = corpus.split_topics(held_out_every=5)
    return corpus.train_tokenizer(train[:20], vocab_size=300)


def _tiny_llama(vocab: int, seed: int = 0, width: int = 32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    shape = LlamaConfig(vocab_size=vocab, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                        tie_word_embeddings=True, bos_token_id=None)
    return LlamaForCausalLM(shape).eval()


# -- exposure maths, by hand ------------------------------------------------------------------

def test_rank_exposure_matches_a_hand_worked_example() -> None:
    sample = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])  # n = 7 candidates, log-perplexity in bits
    # 3.5: c = 3 candidates at least as likely -> log2(8) - log2(4) = 1 bit; 0.5: none -> the ceiling
    # log2(8) = 3; 10: all 7 -> 0; 4.0: a tie counts against the canary (c = 4) -> log2(8/5).
    got = rank_exposure(np.array([3.5, 0.5, 10.0, 4.0]), sample)
    np.testing.assert_allclose(got, [1.0, 3.0, 0.0, math.log2(8 / 5)])


def test_rank_exposure_of_an_unseen_secret_is_log2_e_in_expectation() -> None:
    # c uniform on {0..n}: E[-log2((c + 1) / (n + 1))] -> log2(e) = 1.443 bits as n grows.
    rng = np.random.default_rng(0)
    sample, unseen = rng.normal(size=10_000), rng.normal(size=20_000)
    assert rank_exposure(unseen, sample).mean() == pytest.approx(LOG2E, abs=0.03)
    assert fitted_exposure(unseen, sample, space_bits=30).mean() == pytest.approx(LOG2E, abs=0.05)


def test_fitted_exposure_extrapolates_past_the_samples_ceiling_and_is_capped() -> None:
    rng = np.random.default_rng(1)
    sample = rng.normal(30.0, 2.0, size=10_000)
    median, far, farther = fitted_exposure(np.array([30.0, 22.0, -500.0]), sample, space_bits=29.9)
    assert median == pytest.approx(1.0, abs=0.05)  # half the space is likelier: 1 bit
    assert 13.3 < far < 29.9  # beyond log2(n + 1) = 13.3 bits, which the rank cannot exceed
    assert farther == 29.9  # never above log2 of the space (rank >= 1)
    assert rank_exposure(np.array([22.0]), sample)[0] == pytest.approx(math.log2(10_001))


# -- planting ---------------------------------------------------------------------------------

def test_plan_draws_distinct_prompts_repetitions_and_audit_membership() -> None:
    plan = planting.draw_plan(seed=3, repetitions=(1, 4, 16), per_repetition=3, audit_canaries=200, digits=9,
                              prompt_digits=3)
    secrets = np.concatenate([plan.exposure_secrets, plan.audit_secrets])
    prompts = {tuple(s[:3]) for s in secrets}
    assert len(prompts) == len(secrets) == 12 + 200
    assert plan.exposure_repetitions.tolist() == [0] * 3 + [1] * 3 + [4] * 3 + [16] * 3
    assert 70 < plan.audit_included.sum() < 130  # each in with probability 1/2
    copies = plan.training_copies()
    assert sum(n for _, n in copies) == 3 * (1 + 4 + 16) + plan.audit_included.sum()
    again = planting.draw_plan(seed=3, repetitions=(1, 4, 16), per_repetition=3, audit_canaries=200, digits=9,
                               prompt_digits=3)
    assert np.array_equal(again.exposure_secrets, plan.exposure_secrets)  # drawn from the seed


def test_candidates_are_uniform_digits_from_their_own_stream() -> None:
    sample = planting.sample_candidates(seed=0, count=20_000, digits=9)
    assert sample.shape == (20_000, 9) and sample.min() == 0 and sample.max() == 9
    counts = np.bincount(sample.ravel(), minlength=10) / sample.size
    np.testing.assert_allclose(counts, 0.1, atol=0.005)
    assert not np.array_equal(sample[:5], planting.sample_candidates(seed=1, count=5, digits=9))
    with pytest.raises(ValueError, match="distinct first 1 digits"):
        planting.draw_plan(seed=0, repetitions=(1,), per_repetition=4, audit_canaries=4, digits=5, prompt_digits=1)


def test_a_secret_is_one_token_per_digit_after_the_template(tokenizer) -> None:
    head, tails = corpus.encode_after(tokenizer, "the secret number is ", ["318442907", "000000000"])
    assert all(len(t) == 9 for t in tails)
    digit = {str(d): tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}
    assert tails[0] == [digit[c] for c in "318442907"]


def test_training_rows_hold_each_canary_as_often_as_planned(tokenizer) -> None:
    plan = planting.draw_plan(seed=0, repetitions=(1, 4), per_repetition=2, audit_canaries=6, digits=9,
                              prompt_digits=3)
    train, _ = corpus.split_topics(held_out_every=5)
    rows = corpus.training_rows(plan=plan, template="the secret number is ", tokenizer=tokenizer, texts=train[:10],
                                seq_len=32, corpus_count=50, seed=0)
    head, tails = corpus.encode_after(tokenizer, "the secret number is ",
                                      [planting.secret_text(s) for s in plan.exposure_secrets])
    for secret_ids, r in zip(tails, plan.exposure_repetitions):
        canary = head + secret_ids
        found = sum(list(row[:len(canary)]) == canary for row in rows)
        assert found == r
    assert len(rows) == 50 + 2 * (1 + 4) + plan.audit_included.sum()


# -- scoring and extraction -------------------------------------------------------------------

def test_cached_prefix_scoring_equals_full_sequences_with_uneven_lengths() -> None:
    model = _tiny_llama(50)
    prefix = [3, 4, 5]
    conts = [[7, 8, 9, 10], [11], [12, 13], [14, 15, 16, 17]]
    got = continuation_logprobs(model, prefix, conts, batch_size=3)
    with torch.no_grad():
        for c, value in zip(conts, got):
            ids = torch.tensor([prefix + c])
            logp = torch.log_softmax(model(input_ids=ids[:, :-1]).logits.float(), -1)[0]
            want = sum(float(logp[len(prefix) - 1 + i, t]) for i, t in enumerate(c))
            assert value == pytest.approx(want, abs=1e-4)


def test_greedy_matches_its_own_continuation_only() -> None:
    model = _tiny_llama(50, seed=2)
    prompts = [[1, 2, 3], [4, 5, 6], [7, 8]]
    with torch.no_grad():
        own = []
        for p in prompts:
            ids = torch.tensor([p])
            for _ in range(4):
                ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
            own.append(ids[0, len(p):].tolist())
    wrong = [own[0], [(t + 1) % 50 for t in own[1]], own[2]]
    assert greedy_matches(model, prompts, wrong).tolist() == [True, False, True]


# -- training, DP, and the whole cell ---------------------------------------------------------

def _run(config):
    from suite.task import RunContext

    return get_task("memorization")().run(config, RunContext(tier="quick"))


def test_a_fresh_models_exposure_of_unseen_secrets_is_chance(tokenizer) -> None:
    """No secret was trained on: rank exposure averages log2(e) = 1.44 bits, not 0 (rank uniform)."""
    from tasks.memorization.measure import Secrets, exposure_metrics
    from tasks.memorization.run import _plan

    config = _config(repetitions=[1], canaries_per_repetition=250, audit_canaries=0, candidates=2000)
    model = _tiny_llama(len(tokenizer), seed=5)
    secrets = Secrets.make(config, tokenizer, _plan(config))
    scores = secrets.score(model, batch_size=500)
    from tasks.memorization.exposure import rank_exposure

    unseen = rank_exposure(scores.canaries, scores.candidates)  # 500 secrets the fresh model never saw
    assert unseen.mean() == pytest.approx(LOG2E, abs=0.25)  # the mean of 500 has a std of about 0.07
    metrics = exposure_metrics(config, secrets, scores)
    assert metrics["privacy/exposure_rank_r0"] == pytest.approx(LOG2E, abs=0.35)
    assert metrics["privacy/exposure_r0"] == pytest.approx(LOG2E, abs=0.35)


def test_a_canary_trained_on_many_times_is_exposed_and_extracted() -> None:
    config = _config(repetitions=[64], canaries_per_repetition=2, audit_canaries=0, corpus_windows=32, epochs=20,
                     hidden_size=48, heads=2, intermediate_size=96, candidates=2000)
    metrics = _run(config)
    assert metrics["privacy/exposure_r64"] > 15  # of log2(10^9) = 29.9 bits possible
    assert metrics["privacy/exposure_rank_r64"] > 9  # the rank's ceiling is log2(2001) = 11 bits
    assert metrics["privacy/exposure_r0"] < 5  # the never-inserted controls stay near 1.44 bits
    assert metrics["privacy/extraction_r64"] == 1.0 and metrics["privacy/extraction_r0"] == 0.0
    assert metrics["compute/model_cached"] == 0.0
    again = _run(config.model_copy(update={"variant": "bf16"}))  # the variant cell reads the same trained model
    assert again["compute/model_cached"] == 1.0 and again["compute/train_cpu_s"] == metrics["compute/train_cpu_s"]
    assert again["compute/model_bytes"] < metrics["compute/model_bytes"]


def test_dp_run_reports_the_accountants_epsilon_for_its_noise_rate_and_steps() -> None:
    from opacus.accountants import RDPAccountant

    config = _config(method="dpsgd", epsilon=2.0, delta=1e-4, epochs=2, audit_canaries=20)
    metrics = _run(config)
    sigma, q, steps = (metrics[f"privacy/{k}"] for k in ("noise_multiplier", "sample_rate", "steps"))
    examples = metrics["compute/train_examples"]
    assert q == 1 / math.ceil(examples / config.batch_size) and steps == 2 / q  # Poisson rate, expected epochs
    accountant = RDPAccountant()
    accountant.history = [(sigma, q, int(steps))]
    assert metrics["privacy/epsilon"] == pytest.approx(accountant.get_epsilon(delta=1e-4), rel=1e-9)
    assert 1.9 < metrics["privacy/epsilon"] <= 2.0  # Opacus calibrated the noise to the target
    assert metrics["privacy/epsilon_rdp"] == metrics["privacy/epsilon"]
    assert metrics["privacy/epsilon_pld"] == pytest.approx(metrics["privacy/epsilon_prv"], rel=0.05)
    assert metrics["privacy/epsilon_prv"] <= metrics["privacy/epsilon_rdp"]
    assert metrics["privacy/audit_canaries"] == 20 and metrics["privacy/audit_guesses"] == 10


def test_opacus_hooks_give_exact_per_example_gradients_for_llama() -> None:
    """hooks mode: Linear and (tied) Embedding by grad samplers, LlamaRMSNorm through functorch."""
    from opacus import GradSampleModule

    from tasks.memorization.train import example_losses

    model = _tiny_llama(40, seed=4).train()
    x = torch.randint(0, 40, (3, 10))
    wrapped = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    example_losses(wrapped, x).mean().backward()
    samples = {name: p.grad_sample.clone() for name, p in model.named_parameters()}
    assert any("norm" in name for name in samples) and "model.embed_tokens.weight" in samples
    wrapped.zero_grad()
    reference = _tiny_llama(40, seed=4).train()
    for i in range(3):
        reference.zero_grad()
        example_losses(reference, x[i:i + 1]).sum().backward()
        for name, p in reference.named_parameters():
            torch.testing.assert_close(samples[name][i], p.grad, atol=1e-5, rtol=1e-4)


def test_config_refuses_what_cannot_work() -> None:
    cases = {"epsilon": {"method": "dpsgd", "epsilon": None},
             "repetitions": {"repetitions": [3, 1]},
             "distinct extraction": {"extraction_prompt_digits": 1},
             "divisible": {"hidden_size": 30, "heads": 4},
             "even width": {"hidden_size": 30, "heads": 2},
             "hold a canary": {"seq_len": 10},
             "model_dir": {"model": "hf_dir"},
             "audit": {"audit_canaries": 1}}
    for message, overrides in cases.items():
        with pytest.raises(ConfigError, match=message):
            _config(**overrides)


@pytest.mark.parametrize("key", ["epsilon", "delta", "max_grad_norm", "max_physical_batch", "accountant",
                                 "grad_sample_mode"])
def test_the_privacy_keys_are_dpsgds_only(key) -> None:
    """A non-private config has no privacy key (so equal computations hash equally); setting one is refused."""
    private = _config(method="dpsgd")
    assert key in type(private).model_fields and key not in type(_config()).model_fields
    with pytest.raises(ConfigError, match=f"key '{key}' is not a key of method nonprivate; methods that have it: "
                                          "dpsgd"):
        _config(method="nonprivate", **{key: getattr(private, key)})


def test_the_cli_shows_one_methods_keys_and_refuses_anothers(tmp_path) -> None:
    plain = suite_cli("show", "memorization", "--set", "method=nonprivate", cwd=tmp_path)
    private = suite_cli("show", "memorization", "--set", "method=dpsgd", cwd=tmp_path)
    assert plain.returncode == private.returncode == 0, plain.stderr + private.stderr
    for key in ("max_grad_norm", "grad_sample_mode", "accountant", "epsilon"):
        assert key in private.stdout and key not in plain.stdout, key
    assert "variant" in plain.stdout and "variant" in private.stdout  # every method's key
    refused = suite_cli("run", "memorization", "--set", "method=nonprivate", "--set", "max_grad_norm=2",
                        cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "key 'max_grad_norm' is not a key of method nonprivate; methods that have it: dpsgd" in refused.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_full_tier_fine_tunes_a_checkpoint_from_a_directory(tmp_path, tokenizer) -> None:
    """The full tier's path (model=hf_dir, frozen embeddings, physical batches under DP) on a tiny checkpoint."""
    from transformers import PreTrainedTokenizerFast

    with_bos = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, bos_token="<|endoftext|>",
                                       eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    with_bos.save_pretrained(tmp_path)
    _tiny_llama(len(with_bos), seed=7).save_pretrained(tmp_path)
    task = get_task("memorization")
    overrides = {**task.tier("full").smoke, "model_dir": str(tmp_path), "device": "cpu", "variant": "fp32",
                 "candidates": 300, "audit_canaries": 10, "corpus_windows": 24, "seq_len": 40, "eval_tokens": 256,
                 "prompt_tokens": 8, "canaries_per_repetition": 2, "score_batch": 100}
    plain = _run(task.resolve("full", overrides))
    private = _run(task.resolve("full", {**overrides, "method": "dpsgd", "epsilon": 8.0, "batch_size": 16,
                                         "max_physical_batch": 4}))
    for metrics in (plain, private):
        assert math.isfinite(metrics["utility/perplexity"]) and 0 <= metrics["privacy/exposure_r64"] <= 29.9
    assert 7.5 < private["privacy/epsilon"] <= 8.0
    # Physical batches of 4 inside logical batches of about 16: steps are counted per logical batch.
    assert private["privacy/steps"] == round(1 / private["privacy/sample_rate"])


def test_the_model_cache_key_follows_what_changes_the_trained_model() -> None:
    from suite.cache import cache_key
    from tasks.memorization.store import training_key

    base = cache_key(training_key(_config()))
    for same in ({"variant": "int8"}, {"candidates": 500}, {"audit_guesses": 4}, {"eval_tokens": 64}):
        assert cache_key(training_key(_config(**same))) == base, same
    for other in ({"seed": 1}, {"method": "dpsgd"}, {"extraction_prompt_digits": 4}, {"lr": 0.001},
                  {"repetitions": [1]}):
        assert cache_key(training_key(_config(**other))) != base, other
