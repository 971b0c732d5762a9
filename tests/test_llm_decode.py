"""The llm family's speed path: the compiled static-cache decoder gives the eager model's tokens, the
bandwidth probe and the decode bound."""

from __future__ import annotations

import pytest
import torch

from tasks.llm import measure
from tasks.llm.decode import CompiledDecoder, unsupported_reason
from tasks.llm.variants import apply_variant, decode_bytes_per_token, weight_bytes
from tests.test_llm import _tiny_llama, smollm2  # noqa: F401 (a fixture)


@pytest.mark.parametrize("method", ["fp32", "bf16", "wanda50"])
def test_compiled_decoder_gives_the_eager_tokens(method: str) -> None:
    model = apply_variant(_tiny_llama(), method, calibration=torch.randint(0, 64, (2, 16)))
    decoder = CompiledDecoder(model)
    for prompts in (torch.randint(0, 64, (1, 9)), torch.randint(0, 64, (2, 5))):
        want, _, _ = measure.greedy(model, prompts, 12)
        got, prefill_s, decode_s = decoder.greedy(prompts, 12)
        assert torch.equal(got, want), method
        assert prefill_s > 0 and decode_s > 0


def test_compiled_decoder_leaves_quantized_variants_to_the_eager_loop() -> None:
    for method in ("int8", "fp8_rowwise"):
        model = apply_variant(_tiny_llama(), method)
        assert unsupported_reason(model) is not None, method
        with pytest.raises(ValueError, match="cannot run"):
            CompiledDecoder(model)
        speed = measure.measure_speed(model, list(range(8)), new_tokens=3, repeats=1, compiled=True)
        assert not speed.compiled and speed.decode_tokens_per_s > 0
    assert unsupported_reason(_tiny_llama()) is None


def test_measure_speed_says_which_loop_ran() -> None:
    model = _tiny_llama()
    assert measure.measure_speed(model, list(range(8)), new_tokens=3, repeats=1, compiled=True).compiled
    assert not measure.measure_speed(model, list(range(8)), new_tokens=3, repeats=1).compiled
    with pytest.raises(ValueError, match="warmup"):
        measure.measure_speed(model, list(range(8)), new_tokens=3, repeats=1, warmup=0, compiled=True)


def test_decode_reads_the_tied_head_once_and_one_row_of_an_untied_embedding() -> None:
    tied, untied = _tiny_llama(tied=True), _tiny_llama(tied=False)
    assert decode_bytes_per_token(tied) == weight_bytes(tied)
    embedding = untied.get_input_embeddings().weight
    assert decode_bytes_per_token(untied) == weight_bytes(untied) - (embedding.numel() - embedding.shape[1]) * 4


def test_each_repeat_is_held_against_the_bandwidth_probed_right_after_it() -> None:
    speed = measure.Speed(7.5, 7.5, 1.0, decoded_tokens=15, decode_busy_s=(1.0, 2.0, 4.0),
                          read_gb_per_s=(30.0, 30.0, 10.0))
    # bounds 10, 10 and 3.33 tokens/s for 3 GB a token; speeds 15, 7.5 and 3.75: ratios 1.5, 0.75, 1.125
    assert speed.decode_of_bound(3e9) == pytest.approx(1.125)
    with pytest.raises(ValueError, match="probe_bandwidth"):
        measure.Speed(1.0, 1.0, 1.0).decode_of_bound(1e9)
    measured = measure.measure_speed(_tiny_llama(), list(range(8)), new_tokens=3, repeats=2, probe_bandwidth=True)
    assert len(measured.read_gb_per_s) == len(measured.decode_busy_s) == 2 and measured.decoded_tokens == 2
    assert speed.decode_tokens_per_busy_s == 7.5


def test_bandwidth_probe_reads_at_a_plausible_rate() -> None:
    gb_per_s = measure.memory_read_gb_per_s(mib=64, repeats=2)
    assert 0.5 < gb_per_s < 2000  # a memory system, neither stalled nor a cache


@pytest.mark.parametrize("method", ["fp32", "bf16"])
def test_compiled_decoder_gives_smollm2s_eager_tokens_on_the_speed_prompt(smollm2, method: str) -> None:
    import copy

    from tasks.llm import texts

    model = apply_variant(copy.deepcopy(smollm2.model), method)
    prompt = smollm2.tokenizer(texts.held_out_text(), add_special_tokens=False)["input_ids"][:64]
    ids = torch.tensor([prompt])
    want, _, _ = measure.greedy(model, ids, 16)
    got, _, _ = CompiledDecoder(model).greedy(ids, 16)
    assert torch.equal(got, want)


def test_compiled_kernels_go_to_the_suites_cache_unless_a_user_chose_a_directory(monkeypatch, tmp_path) -> None:
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from tasks.llm.decode import inductor_cache_dir

    monkeypatch.setenv("SUITE_CACHE", str(tmp_path / "suite"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # what inductor writes there itself
    assert inductor_cache_dir() == str(tmp_path / "suite" / "llm" / "inductor")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    assert inductor_cache_dir() == str(tmp_path / "suite" / "llm" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert inductor_cache_dir() == str(tmp_path / "mine")


def test_one_compiled_graph_serves_every_position_and_every_prompt_of_a_shape() -> None:
    from torch._dynamo.utils import counters

    decoder = CompiledDecoder(_tiny_llama())
    decoder.greedy(torch.randint(0, 64, (1, 6)), 10)  # compiles for this cache size
    compiled = counters["stats"]["unique_graphs"]
    assert compiled >= 1
    # Later calls of the same shape run with guards skipped after their first token: a recompilation would raise.
    tokens, _, _ = decoder.greedy(torch.randint(0, 64, (1, 6)), 10)
    assert counters["stats"]["unique_graphs"] == compiled and tokens.shape == (1, 10)


def test_the_benchmark_says_why_each_kind_of_variant_is_below_the_bound() -> None:
    from benchmarks.llm import _reason

    kernels = {"compiled float32": 0.86, "F.linear float32": 0.41, "compiled bfloat16": 0.57, "F.linear bfloat16": 0.22}
    compiled, eager = {"compute/decode_compiled": 1.0}, {"compute/decode_compiled": 0.0}
    assert _reason("int8", [{"compute/speed_emulated": 1.0}], kernels).startswith("emulated, not a kernel speed: int8")
    assert "FP8" in _reason("fp8_rowwise", [{"compute/speed_emulated": 1.0}], kernels)
    assert _reason("fp32", [compiled, eager], kernels).startswith("decoded eagerly")
    bf16 = _reason("bf16", [compiled], kernels)
    assert "57% of the probe" in bf16 and "oneDNN) at 22%" in bf16 and "AVX512-BF16" in bf16
    assert "86% of the probe" in _reason("wanda50", [compiled], kernels)  # pruned models run the fp32 kernels
    assert "kernel timings" in _reason("fp32", [compiled], {})


def test_compile_ahead_steps_aside_while_another_process_compiles_and_its_step_serves_the_pruned_model() -> None:
    from torch._dynamo.utils import counters

    from suite.cache import file_lock
    from tasks.llm.decode import compile_ahead, compile_lock

    torch._dynamo.reset()  # this test process has compiled the step for many shapes: stay under dynamo's limit
    model, prompt = _tiny_llama(), list(range(3, 14))  # a cache of 25 positions: no other test compiles it
    with file_lock(compile_lock(model, len(prompt), 14), wait=False) as held:  # as another cell of the sweep would
        assert held
        before = counters["stats"]["unique_graphs"]
        assert compile_ahead(model, prompt, 14) is False and counters["stats"]["unique_graphs"] == before
    assert compile_ahead(model, prompt, 14) is True
    compiled = counters["stats"]["unique_graphs"]
    assert compiled > before
    # Pruning zeroes weights in place: the variant decodes with the step compiled from the loaded model.
    model = apply_variant(model, "wanda50", calibration=torch.randint(0, 64, (2, 16)))
    ids = torch.tensor([prompt])
    got, _, _ = CompiledDecoder(model).greedy(ids, 14)
    assert counters["stats"]["unique_graphs"] == compiled
    assert torch.equal(got, measure.greedy(model, ids, 14)[0])
