"""The llm family's pruning: Wanda's masks on hand-worked rows, its layer-by-layer calibration, and the
calibration text, which must share nothing with the evaluation text."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tasks.llm import prune, texts
from tasks.llm.variants import apply_variant, block_linears, linear_sparsity
from tests.test_llm import _tiny_llama


def test_row_mask_drops_the_lowest_half_of_every_row() -> None:
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0],
                           [0.5, 0.7, 0.1, 0.9]])
    assert prune.row_mask(scores, sparsity=0.5).tolist() == [[1, 0, 1, 0], [0, 1, 0, 1]]


def test_row_mask_breaks_ties_by_column() -> None:
    assert prune.row_mask(torch.ones(1, 4), sparsity=0.5).tolist() == [[0, 0, 1, 1]]


def test_wanda_weighs_magnitude_by_the_input_norm() -> None:
    # Magnitude alone would keep columns 0 and 1; column 2's input is 100x larger, so Wanda keeps it instead.
    weight = torch.tensor([[0.9, 0.8, 0.1, 0.05]])
    norm = torch.tensor([1.0, 1.0, 100.0, 1.0])
    assert prune.wanda_scores(weight, norm).tolist()[0] == pytest.approx([0.9, 0.8, 10.0, 0.05])
    assert prune.wanda_mask(weight, norm, pattern="unstructured").tolist() == [[1, 0, 1, 0]]
    assert prune.two_four_mask(weight).tolist() == [[1, 1, 0, 0]]  # magnitude's 2:4 choice
    assert prune.wanda_mask(weight, norm, pattern="2:4").tolist() == [[1, 0, 1, 0]]


def test_wanda_compares_within_rows_not_across_the_layer() -> None:
    # Row 1's weights are all smaller than row 0's; per-row comparison still keeps half of row 1.
    weight = torch.tensor([[10.0, 20.0, 30.0, 40.0], [0.1, 0.2, 0.3, 0.4]])
    mask = prune.wanda_mask(weight, torch.ones(4), pattern="unstructured")
    assert mask.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]]


def test_two_four_needs_half_and_groups_of_four() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        prune.n_m_mask(torch.ones(2, 6))
    with pytest.raises(ValueError, match="exactly half"):
        prune.wanda_mask(torch.ones(2, 8), torch.ones(8), pattern="2:4", sparsity=0.6)
    with pytest.raises(ValueError, match="allowed: unstructured, 2:4"):
        prune.wanda_mask(torch.ones(2, 8), torch.ones(8), pattern="4:8")


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_wanda50_prunes_half_of_every_row_of_every_block_linear(pattern: str) -> None:
    model = apply_variant(_tiny_llama(), "wanda50", prune_pattern=pattern, calibration=torch.randint(0, 64, (3, 12)))
    assert linear_sparsity(model) == pytest.approx(0.5)
    for _, linear in block_linears(model):
        zeros = (linear.weight == 0).float()
        assert torch.all(zeros.sum(1) == linear.in_features // 2)  # per row, not per layer
        if pattern == "2:4":
            assert torch.all(zeros.reshape(linear.out_features, -1, 4).sum(-1) == 2)
    assert float((model.lm_head.weight == 0).float().mean()) < 0.01  # the tied embedding is untouched


def test_wanda_takes_each_layers_norms_from_inputs_the_earlier_pruned_layers_produced() -> None:
    """Layer i's statistics come from its own unpruned weights fed by pruned layers 0..i-1 (the paper's
    sequential order): recomputed by hand here, layer by layer, they must give the same masks."""
    calibration = torch.randint(0, 64, (2, 10))
    model = apply_variant(_tiny_llama(seed=1), "wanda50", calibration=calibration)
    reference = _tiny_llama(seed=1)
    with torch.no_grad():
        for layer, pruned in zip(reference.model.layers, model.model.layers):
            norms = _input_norms(reference, layer, calibration)  # layer unpruned, earlier layers pruned already
            for (name, linear), (_, want) in zip(_linears(layer), _linears(pruned)):
                linear.weight.mul_(prune.wanda_mask(linear.weight, norms[name], pattern="unstructured"))
                assert torch.equal(linear.weight == 0, want.weight == 0), name


def test_wanda50_needs_calibration_tokens() -> None:
    with pytest.raises(ValueError, match="calibration"):
        apply_variant(_tiny_llama(), "wanda50")
    with pytest.raises(ValueError, match="sequences, tokens"):
        apply_variant(_tiny_llama(), "wanda50", calibration=torch.randint(0, 64, (12,)))


def test_calibration_text_shares_no_paragraph_with_the_evaluation_text() -> None:
    held_out, calibration = texts.held_out_text(), texts.calibration_text()
    assert len(calibration) > 100_000  # room for the quick tier's 2,048 tokens many times over
    paragraphs = [p.strip() for p in calibration.split("\n\n") if len(p.strip()) >= 80]
    assert paragraphs and not [p for p in paragraphs if p in held_out]
    held = [p.strip() for p in held_out.split("\n\n") if len(p.strip()) >= 80]
    assert not [p for p in held if p in calibration]
    # pydoc repeats whole topics inside others ("specialnames" holds "customization", a held-out topic):
    from pydoc_data.topics import topics

    assert "customization" in sorted(topics)[::5] and topics["specialnames"].strip() not in calibration


def test_calibration_windows_are_drawn_with_the_seed() -> None:
    ids = list(range(1000))
    a = texts.calibration_windows(ids, sequences=4, length=50, seed=0)
    assert a == texts.calibration_windows(ids, sequences=4, length=50, seed=0)
    assert a != texts.calibration_windows(ids, sequences=4, length=50, seed=1)
    assert all(len(w) == 50 and w == list(range(w[0], w[0] + 50)) for w in a)
    with pytest.raises(ValueError, match="fewer than one window"):
        texts.calibration_windows(ids[:10], sequences=1, length=50, seed=0)


def _linears(layer: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in layer.named_modules() if isinstance(m, nn.Linear)]


def _input_norms(model, layer: nn.Module, calibration: torch.Tensor) -> dict[str, torch.Tensor]:
    """L2 norms of each linear's inputs in ``layer`` during one forward of ``model``, stopped after ``layer``."""
    sums: dict[str, torch.Tensor] = {}

    class Stop(Exception):
        pass

    def record(name):
        def hook(module, inputs):
            x = inputs[0].reshape(-1, module.in_features).double()
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in _linears(layer)]
    handles.append(layer.register_forward_hook(lambda *_: (_ for _ in ()).throw(Stop())))
    try:
        model.model(input_ids=calibration, use_cache=False)
    except Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return {n: v.sqrt() for n, v in sums.items()}
