"""The llm family: FP8 row-wise maths, pruning (magnitude, Wanda), the variants, the model cache, the meters,
the compiled decoder, the texts, the harness path.

Most checks use a tiny random Llama (real transformers classes) so they run in seconds; the ones that
need SmolLM2 itself share one load (the first dequantizes the GGUF into the test cache, ~10 s).
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
import torch

from suite.errors import ConfigError
from suite.task import get_task
from tasks.llm import measure, prune, texts
from tasks.llm.decode import CompiledDecoder, unsupported_reason
from tasks.llm.fp8 import E4M3_MAX, Fp8RowwiseLinear, quantize_rowwise
from tasks.llm.model import load_cached, load_hf_dir, verify_cache_file
from tasks.llm.prune import two_four_mask
from tasks.llm.variants import apply_variant, block_linears, decode_bytes_per_token, linear_sparsity, weight_bytes
from tests.conftest import suite_cli


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<eos>": 1, **{w: i + 2 for i, w in enumerate("the a cat dog sat on mat is blue red".split())}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")


def _tiny_llama(layers: int = 4, seed: int = 0, tied: bool = True):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=tied, architectures=["LlamaForCausalLM"])
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M through the suite's cache (built on first use in the test session's cache)."""
    from tasks.llm.model import load_gguf_cached

    return load_gguf_cached()


# -- FP8 row-wise ----------------------------------------------------------------------------

def test_rowwise_fp8_has_one_scale_per_row_and_small_error() -> None:
    x = torch.randn(8, 64) * torch.logspace(-2, 2, 8)[:, None]  # rows of very different magnitudes
    q, scale = quantize_rowwise(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (8, 1)
    assert float(q.float().abs().amax()) == E4M3_MAX  # each row's maximum maps to e4m3's largest value
    rel = ((q.float() * scale - x).abs() / x.abs().amax(1, keepdim=True)).amax()
    assert rel < 2 ** -4  # 3 mantissa bits: half an ulp at the top of the range


def test_activation_upper_bound_caps_the_scale_and_saturates_outliers() -> None:
    x = torch.ones(2, 16)
    x[0, 0] = 5000.0
    q, scale = quantize_rowwise(x, upper_bound=1200.0)
    assert float(scale[0]) == pytest.approx(1200.0 / E4M3_MAX)
    assert float(q[0, 0].float() * scale[0]) == pytest.approx(1200.0, rel=0.07)  # clipped, not 5000
    assert float(scale[1]) == pytest.approx(1.0 / E4M3_MAX)  # a quiet row keeps its own scale


def test_fp8_recipe_swaps_ffn_of_inner_layers_only() -> None:
    model = apply_variant(_tiny_llama(layers=4), "fp8_rowwise")
    kinds = [[type(getattr(layer.mlp, p)).__name__ for p in ("gate_proj", "up_proj", "down_proj")]
             for layer in model.model.layers]
    assert kinds[0] == kinds[-1] == ["Linear"] * 3
    assert kinds[1] == kinds[2] == ["Fp8RowwiseLinear"] * 3
    assert type(model.model.layers[1].self_attn.q_proj).__name__ == "Linear"  # attention stays high precision


def test_fp8_linear_matches_float_within_fp8_precision() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(5, 64)
    got, want = Fp8RowwiseLinear(linear, activation_upper_bound=1200.0)(x), linear(x)
    assert (got - want).norm() / want.norm() < 0.08


# -- pruning and the variants ----------------------------------------------------------------

def test_two_four_mask_keeps_the_two_largest_of_every_four() -> None:
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5, 4.0, 0.0, -0.2, 1.0]])
    assert two_four_mask(w).tolist() == [[0, 1, 1, 0, 1, 0, 0, 1]]
    mask = two_four_mask(torch.randn(16, 64))
    assert torch.all(mask.reshape(16, 16, 4).sum(-1) == 2)


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_pruned50_zeros_half_of_every_block_linear(pattern: str) -> None:
    model = apply_variant(_tiny_llama(), "pruned50", prune_pattern=pattern)
    assert linear_sparsity(model) == pytest.approx(0.5, abs=1e-3)
    assert float((model.lm_head.weight == 0).float().mean()) < 0.01  # the tied embedding is untouched


def test_variants_keep_quality_and_shrink_weights() -> None:
    ids = torch.randint(0, 64, (2, 24))
    reference = _tiny_llama()
    with torch.inference_mode():
        want = reference(input_ids=ids).logits.float()
    sizes = {}
    calibration = torch.randint(0, 64, (4, 16))
    for method in ("fp32", "bf16", "int8", "fp8_rowwise", "pruned50", "wanda50"):
        model = apply_variant(_tiny_llama(), method, calibration=calibration)
        with torch.inference_mode():
            got = model(input_ids=ids).logits.float()
        sizes[method] = weight_bytes(model)
        err = float((got - want).norm() / want.norm())
        assert err < (1.0 if method in ("pruned50", "wanda50") else 0.1), (method, err)
        if method in ("bf16", "int8", "fp8_rowwise"):
            assert err > 0, method  # the variant really changed the arithmetic
    assert sizes["int8"] < sizes["fp8_rowwise"] < sizes["fp32"]  # fp8 leaves first/last layers in fp32
    assert sizes["bf16"] == pytest.approx(sizes["fp32"] / 2, rel=0.01)
    assert sizes["pruned50"] == sizes["wanda50"] == sizes["fp32"]  # zeros stored densely
    tiny = _tiny_llama()
    assert sizes["fp32"] == 4 * sum(t.numel() for t in [*tiny.parameters(), *tiny.buffers()])  # tied head once


# -- the model cache ---------------------------------------------------------------------------

def test_model_cache_round_trips_and_rebuilds_a_truncated_file(tmp_path: Path, caplog) -> None:
    builds = []

    def build():
        builds.append(1)
        return _tiny_llama(), _tokenizer()

    path = tmp_path / "tiny.safetensors"
    first = load_cached(path, build, source="tiny")
    again = load_cached(path, build, source="tiny")
    assert (first.from_cache, again.from_cache, len(builds)) == (False, True, 1)
    ids = torch.randint(0, 12, (1, 10))
    with torch.inference_mode():
        assert torch.equal(first.model(input_ids=ids).logits, again.model(input_ids=ids).logits)
    assert again.tokenizer("the cat sat")["input_ids"] == first.tokenizer("the cat sat")["input_ids"]

    data = path.read_bytes()
    path.write_bytes(data[:-1000])  # a crash mid-copy, a full disk
    assert "truncated" in verify_cache_file(path)
    with caplog.at_level(logging.WARNING, logger="tasks.llm.model"):
        rebuilt = load_cached(path, build, source="tiny")
    assert not rebuilt.from_cache and len(builds) == 2
    assert "model cache" in caplog.text and "unusable" in caplog.text and "rebuilding" in caplog.text
    assert verify_cache_file(path) is None

    flipped = bytearray(path.read_bytes())
    flipped[-5] ^= 0xFF  # one corrupted weight byte
    path.write_bytes(bytes(flipped))
    assert "SHA-256" in verify_cache_file(path)


def test_gguf_is_parsed_once_inside_the_block_and_the_library_is_restored_after(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    from tasks.llm.model import gguf_parsed_once

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    plain_reader, plain_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with gguf_parsed_once():
        first, again = gguf.GGUFReader(path), gguf.GGUFReader(str(path))
        assert first is again  # one parse
        assert np.array_equal(first.tensors[0].data, np.arange(12, dtype=np.float32).reshape(3, 4))
        arch = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(arch, 2) is gguf.get_tensor_name_map(arch, 2)
        assert gguf.get_tensor_name_map(arch, 2).get_name("model.layers.1.mlp.down_proj") == "blk.1.ffn_down"
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (plain_reader, plain_map)
    assert gguf.GGUFReader(path) is not gguf.GGUFReader(path)


def test_hf_dir_must_hold_a_causal_lm(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(ValueError, match="not a causal LM"):
        load_hf_dir(tmp_path)
    model_dir = tmp_path / "tiny"
    _tiny_llama().save_pretrained(model_dir)
    _tokenizer().save_pretrained(model_dir)
    loaded = load_hf_dir(model_dir)
    assert type(loaded.model).__name__ == "LlamaForCausalLM" and not loaded.from_cache


# -- the meters --------------------------------------------------------------------------------

def test_greedy_loop_matches_transformers_generate() -> None:
    model = _tiny_llama()
    prompts = torch.randint(0, 64, (3, 7))
    tokens, prefill_s, decode_s = measure.greedy(model, prompts, 9)
    expected = model.generate(prompts, max_new_tokens=9, do_sample=False, pad_token_id=0,
                              attention_mask=torch.ones_like(prompts))[:, 7:]
    assert torch.equal(tokens, expected)
    assert prefill_s > 0 and decode_s > 0


def test_perplexity_equals_the_models_own_loss() -> None:
    model = _tiny_llama()
    ids = torch.randint(0, 64, (65,)).tolist()
    quality = measure.evaluate_quality(model, ids, context=32, max_tokens=64)
    with torch.inference_mode():
        losses = [float(model(input_ids=torch.tensor([ids[i:i + 32]]), labels=torch.tensor([ids[i:i + 32]])).loss)
                  for i in (0, 32)]
    # the model's loss drops each window's first target; ours scores it with the preceding window's last token
    assert quality.tokens == 64 and 0 <= quality.next_token_accuracy <= 1
    # the per-token scores recorded for paired comparisons give the same perplexity and accuracy
    assert len(quality.token_losses) == len(quality.token_correct) == len(quality.targets) == 64
    assert quality.targets == tuple(ids[1:65])
    assert abs(torch.tensor(quality.token_losses).double().mean().exp().item() / quality.perplexity - 1) < 1e-9
    assert sum(quality.token_correct) / 64 == quality.next_token_accuracy
    assert abs(torch.tensor(losses).mean().exp().item() / quality.perplexity - 1) < 0.05


# -- config ------------------------------------------------------------------------------------

def test_config_errors_name_the_problem() -> None:
    task = get_task("llm")
    with pytest.raises(ConfigError, match="model_dir"):
        task.resolve("quick", {"model": "hf_dir"})
    with pytest.raises(ConfigError, match="lm_eval_dir"):
        task.resolve("quick", {"lm_eval_tasks": ["x"]})
    with pytest.raises(ConfigError, match="unknown key 'epsilon'"):  # no method of llm has a privacy budget
        task.resolve("quick", {"epsilon": 1.0})
    with pytest.raises(ConfigError, match="method"):
        task.resolve("quick", {"method": "int4"})
    # values that would pass a type check and then fail inside the run, after the model was loaded
    for overrides, rule in [({"eval_tokens": 16, "context": 32}, "eval_tokens .16. must be at least context .32."),
                            ({"context": 8192, "eval_tokens": 9000}, "context"),
                            ({"held_out_every": 80}, "held_out_every"),
                            ({"prompt_tokens": 8000, "new_tokens": 500}, "prompt_tokens . new_tokens")]:
        with pytest.raises(ConfigError, match=rule):
            task.resolve("quick", overrides)
    with pytest.raises(ConfigError, match="smollm2-135m-instruct-q4_1"):
        task.resolve("quick", {"model": "smollm2-135m-gguf"})  # the old name, which hid the 4-bit source
    quick = task.resolve("quick")
    assert quick.model == "smollm2-135m-instruct-q4_1" and quick.decode == "compiled"
    tags = task().tags(quick)
    assert "dequantized from Q4_1" in tags["llm.weights"] and "dequantized from Q4_1" in task.description
    assert "emulated" in task().tags(task.resolve("quick", {"method": "int8"}))["llm.int8_matmul"]
    assert task().tags(task.resolve("quick", {"method": "fp8_rowwise"}))["llm.fp8_matmul"] == "emulated"
    assert "llm.int8_matmul" not in tags and "llm.fp8_matmul" not in tags
    full = task.resolve("full")
    assert full.model == "hf_dir" and full.device == "auto" and full.lm_eval_tasks
    wanda = task.resolve("full", {"method": "wanda50"})
    assert (wanda.calibration_sequences, wanda.calibration_tokens) == (128, 2048)  # the paper's calibration
    assert task.tier("full").grid and task.tier("quick").threads == 1


def test_each_variant_holds_only_the_keys_it_reads() -> None:
    task = get_task("llm")
    shared = set(task.config_model("fp32").model_fields)
    assert {"model", "context", "decode", "device", "lm_eval_tasks"} <= shared
    for method in ("fp32", "bf16", "int8"):
        assert set(task.config_model(method).model_fields) == shared, method
    assert set(task.config_model("fp8_rowwise").model_fields) - shared == {"fp8_activation_bound"}
    assert set(task.config_model("pruned50").model_fields) - shared == {"prune_pattern"}
    assert set(task.config_model("wanda50").model_fields) - shared == {"prune_pattern", "calibration_sequences",
                                                                        "calibration_tokens"}
    # the tier's defaults apply to the methods that have the key; a run's override must be the method's
    assert task.resolve("quick", {"method": "wanda50", "prune_pattern": "2:4"}).prune_pattern == "2:4"
    assert task.resolve("quick", {"method": "wanda50", "calibration_sequences": 3}).calibration_sequences == 3
    assert task.resolve("quick", {"method": "fp8_rowwise"}).fp8_activation_bound == 1200.0
    with pytest.raises(ConfigError, match="key 'prune_pattern' is not a key of method fp32; methods that have it: "
                                          "pruned50, wanda50"):
        task.resolve("quick", {"method": "fp32", "prune_pattern": "2:4"})
    with pytest.raises(ConfigError, match="key 'calibration_sequences' is not a key of method pruned50"):
        task.resolve("quick", {"method": "pruned50", "calibration_sequences": 3})


def test_apply_variant_reads_the_keys_of_the_named_method_only() -> None:
    """The by-name entry point other families use: a method's keys reach it, the others' are ignored."""
    dense = apply_variant(_tiny_llama(), "fp32", prune_pattern="2:4", fp8_activation_bound=1.0)
    assert linear_sparsity(dense) == 0.0
    two_four = apply_variant(_tiny_llama(), "pruned50", prune_pattern="2:4")
    for _, linear in block_linears(two_four):
        assert (linear.weight.reshape(-1, 4) != 0).sum(-1).le(2).all()
    with pytest.raises(ValueError, match="unknown method 'int4'"):
        apply_variant(_tiny_llama(), "int4")


def test_cli_shows_a_variants_keys_and_refuses_another_variants_key(tmp_path: Path) -> None:
    fp32 = suite_cli("show", "llm", "--set", "method=fp32", cwd=tmp_path)
    wanda = suite_cli("show", "llm", "--set", "method=wanda50", cwd=tmp_path)
    assert fp32.returncode == wanda.returncode == 0, fp32.stderr + wanda.stderr
    assert "keys of method fp32" in fp32.stdout
    for key in ("prune_pattern", "calibration_sequences", "fp8_activation_bound"):
        assert key not in fp32.stdout
    assert "prune_pattern" in wanda.stdout and "calibration_tokens" in wanda.stdout
    assert "fp8_activation_bound" not in wanda.stdout
    refused = suite_cli("run", "llm", "--set", "method=bf16", "--set", "prune_pattern=2:4", cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "key 'prune_pattern' is not a key of method bf16; methods that have it: pruned50, wanda50" in refused.stderr
    assert not (tmp_path / "mlflow.db").exists()


# -- SmolLM2 itself ----------------------------------------------------------------------------

def test_lm_eval_harness_scores_the_in_memory_model_on_a_local_task(smollm2, tmp_path: Path) -> None:
    from tasks.llm.harness import evaluate_harness

    docs = [{"question": "The capital of France is", "choices": [" Paris", " a banana"], "answer": 0},
            {"question": "One, two, three, four,", "choices": [" purple", " five"], "answer": 1},
            {"question": "def add(a, b):\n    return", "choices": [" a + b", " the moon"], "answer": 0}]
    data = tmp_path / "tiny_choice.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "tiny_choice.yaml").write_text(
        "task: suite_tiny_choice\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\nmetric_list:\n  - metric: acc\n")
    scores = evaluate_harness(smollm2.model, smollm2.tokenizer, tasks=["suite_tiny_choice"], task_dir=tmp_path)
    assert scores["suite_tiny_choice"] == pytest.approx(1.0)  # three questions a 135M model gets right
    with pytest.raises(ValueError, match="not defined"):
        evaluate_harness(smollm2.model, smollm2.tokenizer, tasks=["no_such_task"], task_dir=tmp_path)
