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

LOG2E = 1 / math.log(2)


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
