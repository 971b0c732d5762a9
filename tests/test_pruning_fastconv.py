"""The training-only depthwise convolution (tasks.pruning.fastconv.py): its gradients equal autograd's
on FBNetV3's own depthwise layers and on general strides, paddings and kernels; every other call is
left to aten; the models' modules are untouched; and a pruned model trains under it in the real
pipeline (torch-pruning, Trainer)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from suite.task import get_task
from tasks.pruning import models
from tasks.pruning.fastconv import DepthwiseConv2d, _per_tap_is_faster, fast_convolutions, live_taps

torch.set_num_threads(1)
TASK = get_task("pruning")


def _grads(x, weight, bias, stride, padding, grad_out, *, fast: bool):
    x, weight = x.clone().requires_grad_(), weight.clone().requires_grad_()
    bias = None if bias is None else bias.clone().requires_grad_()
    if fast:
        out = DepthwiseConv2d.apply(x, weight, bias, stride, padding)
    else:
        out = F.conv2d(x, weight, bias, stride, padding, 1, x.shape[1])
    out.backward(grad_out)
    return out.detach(), x.grad, weight.grad, None if bias is None else bias.grad


def _assert_same_gradients(x, weight, bias, stride, padding) -> None:
    torch.manual_seed(1)
    grad_out = torch.randn_like(F.conv2d(x, weight, bias, stride, padding, 1, x.shape[1]))
    expected = _grads(x, weight, bias, stride, padding, grad_out, fast=False)
    got = _grads(x, weight, bias, stride, padding, grad_out, fast=True)
    for name, a, b in zip(("output", "input grad", "weight grad", "bias grad"), expected, got):
        if a is not None:
            assert b.shape == a.shape, name
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5 * float(a.abs().max()), msg=name)


def _depthwise_layers(name: str, resolution: int = 32) -> list[tuple[tuple[int, ...], torch.nn.Conv2d]]:
    """(input shape, module) of every depthwise conv of timm's FBNetV3 ``name`` at ``resolution``."""
    model, seen = models.build(name, 10), []
    hooks = [m.register_forward_hook(lambda m, inp, out: seen.append((tuple(inp[0].shape), m)))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    with torch.no_grad():
        model(torch.randn(2, 3, resolution, resolution))
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("name", ["fbnetv3_b", "fbnetv3_d", "fbnetv3_g"])
def test_gradients_equal_autograds_on_every_fbnet_depthwise_layer(name) -> None:
    """Each distinct (channels, map, kernel, stride, padding) of the model at 32x32, channels_last as
    in training, batch 8; both ways of computing the weight gradient are exercised."""
    torch.manual_seed(0)
    shapes = {(shape[1:], m.kernel_size, m.stride, m.padding, m.dilation, m.groups)
              for shape, m in _depthwise_layers(name)}
    paths = set()
    for (chw, kernel, stride, padding, dilation, groups) in sorted(shapes):
        assert dilation == (1, 1) and groups == chw[0]  # what FBNet has; other cases go to aten
        x = torch.randn(8, *chw).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(chw[0], 1, *kernel).contiguous(memory_format=torch.channels_last)
        out = F.conv2d(x, weight, None, stride, padding, 1, chw[0])
        paths.add(_per_tap_is_faster(x, weight, out))
        _assert_same_gradients(x, weight, None, stride, padding)
    assert paths == {True, False}


@pytest.mark.parametrize("shape, kernel, stride, padding, bias, channels_last", [
    ((3, 1, 1), (5, 5), (1, 1), (2, 2), False, True),   # only the centre tap is live
    ((3, 2, 2), (5, 5), (1, 1), (2, 2), True, False),   # a 3x3 block is live
    ((3, 2, 3), (3, 3), (2, 2), (1, 1), True, True),
    ((4, 5, 4), (7, 7), (3, 3), (3, 3), False, False),
    ((2, 3, 4), (5, 3), (2, 1), (1, 2), True, True),    # rectangular kernel, asymmetric stride and padding
    ((2, 6, 5), (5, 5), (1, 1), (0, 0), False, True),   # no padding
    ((2, 4, 4), (1, 1), (2, 2), (0, 0), True, False),   # pointwise depthwise
    ((3, 16, 16), (5, 5), (2, 2), (2, 2), False, True),  # a large map: aten's path
])
def test_gradients_equal_autograds_for_general_strides_paddings_and_kernels(
        shape, kernel, stride, padding, bias, channels_last) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, *shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    _assert_same_gradients(x, torch.randn(shape[0], 1, *kernel), torch.randn(shape[0]) if bias else None,
                           stride, padding)


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_a_1x1_convolution_of_a_1x1_map_is_a_matrix_product_with_autograds_gradients(bias, channels_last) -> None:
    """The head's shape (1344 to 1984 channels) and a squeeze-excitation one, at batch 16."""
    torch.manual_seed(0)
    for c_in, c_out in ((1344, 1984), (120, 32)):
        x = torch.randn(16, c_in, 1, 1)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        w, b = torch.randn(c_out, c_in, 1, 1) / c_in ** 0.5, torch.randn(c_out) if bias else None
        grad_out = torch.randn(16, c_out, 1, 1)
        grads = []
        for fast in (False, True):
            leaves = [t.clone().requires_grad_() for t in (x, w, b) if t is not None]
            if fast:
                with fast_convolutions():
                    out = F.conv2d(*leaves)
                assert "ConvolutionBackward0" not in _grad_fns(out)
            else:
                out = F.conv2d(*leaves)
            out.backward(grad_out)
            grads.append([out.detach()] + [t.grad for t in leaves])
        for expected, got in zip(*grads):
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 9), kernel=st.integers(1, 7), stride=st.integers(1, 3), padding=st.integers(0, 4))
def test_live_taps_are_exactly_the_taps_that_meet_an_input_pixel(size, kernel, stride, padding) -> None:
    out_size = (size + 2 * padding - kernel) // stride + 1
    if out_size < 1:
        return
    brute = []
    for tap in range(kernel):
        outs = [o for o in range(out_size) if 0 <= stride * o + tap - padding < size]
        if outs:
            assert outs == list(range(outs[0], outs[-1] + 1))
            brute.append((tap, outs[0], len(outs)))
    assert live_taps(size, out_size, kernel, stride=stride, padding=padding) == brute


def _grad_fns(out: torch.Tensor) -> list[str]:
    seen, stack, names = set(), [out.grad_fn], []
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.append(type(fn).__name__)
        stack.extend(f for f, _ in fn.next_functions)
    return names


@pytest.mark.parametrize("call", [
    lambda x, w: F.conv2d(x, w, padding=2, dilation=2, groups=4),    # dilation
    lambda x, w: F.conv2d(x, w, padding="same", groups=4),           # string padding
    lambda x, w: F.conv2d(x, w.reshape(2, 2, 3, 3), padding=1, groups=2),  # grouped, not depthwise
    lambda x, w: F.conv2d(x, w.detach(), padding=1, groups=4),       # no weight gradient wanted
    lambda x, w: F.conv2d(x, w.reshape(9, 4, 1, 1)),                 # 1x1 conv of a 6x6 map
    lambda x, w: F.conv2d(x[:, :, :1, :1], w.reshape(9, 4, 1, 1), padding=1),  # padded: the map grows
])
def test_calls_it_does_not_cover_run_unchanged_on_aten(call) -> None:
    torch.manual_seed(0)
    x, w = torch.randn(2, 4, 6, 6, requires_grad=True), torch.randn(4, 1, 3, 3, requires_grad=True)
    expected = call(x, w)
    with fast_convolutions():
        got = call(x, w)
    assert torch.equal(got, expected)
    assert "ConvolutionBackward0" in _grad_fns(got)
    with fast_convolutions(), torch.no_grad():
        assert torch.equal(F.conv2d(x, w, padding=1, groups=4), F.conv2d(x, w, padding=1, groups=4))


def _model_gradients(*, fast: bool, dtype: torch.dtype = torch.float32):
    torch.manual_seed(0)
    model = models.build("fbnetv3_b", 10).to(dtype).to(memory_format=torch.channels_last).train()
    x = torch.randn(16, 3, 32, 32).to(dtype).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (16,))
    if fast:
        with fast_convolutions():
            out = model(x)
    else:
        out = model(x)
    F.cross_entropy(out, y).backward()
    return model, out, {n: p.grad.double() for n, p in model.named_parameters()}


def test_a_whole_model_gets_autograds_gradients_and_keeps_its_modules() -> None:
    """fbnetv3_b in training mode, channels_last, batch 16, against a float64 reference: the fast
    path's float32 gradients are as close to it as plain float32 autograd's (whose own error is
    ~1e-4: BatchNorm's backward in training mode amplifies rounding; some gradients are exactly 0 in
    exact arithmetic, a constant shift being removed by the next BatchNorm), in all and per
    parameter. Every depthwise conv went through DepthwiseConv2d and the head through a matrix
    product; the modules stay plain Conv2d."""
    reference = _model_gradients(fast=False, dtype=torch.float64)[2]
    plain = _model_gradients(fast=False)[2]
    model, out, fast = _model_gradients(fast=True)
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert sum(n.startswith("DepthwiseConv2d") for n in _grad_fns(out)) == len(depthwise) > 0
    assert "AddmmBackward0" in _grad_fns(out)
    assert all(type(m) is torch.nn.Conv2d for m in depthwise)

    def error(grads, names) -> float:
        got, ref = (torch.cat([g[n].flatten() for n in names]) for g in (grads, reference))
        return float((got - ref).norm() / ref.norm())

    every = list(reference)
    assert error(fast, every) <= max(2 * error(plain, every), 1e-5) and error(fast, every) < 5e-4
    scale = torch.cat([g.flatten() for g in reference.values()]).norm()
    for name in (n for n in every if reference[n].norm() > 1e-6 * scale):
        assert error(fast, [name]) <= max(2 * error(plain, [name]), 1e-4), name


def test_a_pruned_model_trains_under_it_with_the_pipelines_trainer() -> None:
    """fbnetv3_d pruned by torch-pruning (its depthwise convs keep groups == channels), then a few
    Trainer steps (which apply the fast path) on real digits: the loss on the training batches falls
    and the pruned depthwise layers' gradients were computed by DepthwiseConv2d."""
    from tasks.pruning.data import load_images
    from tasks.pruning.prune import make_pruner
    from tasks.pruning.train import Trainer

    config = TASK.resolve("quick", {"method": "unpruned", "model": "fbnetv3_d", "train_subset": 64,
                                    "batch_size": 32, "lr": 0.005, "warmup_epochs": 0})
    images = load_images(config)
    torch.manual_seed(0)
    model = models.build("fbnetv3_d", images.n_classes)
    importance = TASK.method_registry.get("magnitude")().importance()
    make_pruner(model.eval(), importance, ratio=0.3, steps=1, resolution=32).step()
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    x, y = images.train[0][:64].contiguous(memory_format=torch.channels_last), images.train[1][:64]

    def loss() -> float:
        with torch.no_grad():
            return F.cross_entropy(model.train()(x), y).item()

    calls = []
    original = DepthwiseConv2d.backward
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DepthwiseConv2d, "backward", staticmethod(
            lambda ctx, g: calls.append(1) or original(ctx, g)))
        before = loss()
        trainer = Trainer(config, images, total_steps=12, seed=0)
        trainer.run(model, 12)
    assert trainer.step == 12 and len(calls) == 12 * len(depthwise)
    assert loss() < before
    assert all(torch.isfinite(p).all() for p in model.parameters())



def test_evaluation_and_recalibration_put_a_contiguous_model_in_the_inputs_memory_format() -> None:
    """A model read from the cache or just pruned is contiguous; fed channels_last inputs it ran ~4x
    slower. Both passes convert it (as Trainer.run does) and give the contiguous model's results."""
    from tasks.pruning.data import load_images
    from tasks.pruning.train import evaluate, recalibrate_batchnorm

    config = TASK.resolve("quick", {"method": "unpruned", "model": "fbnetv3_b", "train_subset": 64,
                                    "test_subset": 64, "batch_size": 32, "bn_recalibration_batches": 2})
    plain = config.model_copy(update={"channels_last": False})
    images = load_images(config)
    results = []
    for cfg in (plain, config):
        torch.manual_seed(0)
        model = models.build("fbnetv3_b", images.n_classes)
        recalibrate_batchnorm(model, images, cfg, seed=0)
        results.append((evaluate(model, images, cfg), model.conv_stem.weight))
    (expected, contiguous), (got, converted) = results
    assert contiguous.is_contiguous() and not contiguous.is_contiguous(memory_format=torch.channels_last)
    assert converted.is_contiguous(memory_format=torch.channels_last)
    assert got["utility/accuracy"] == pytest.approx(expected["utility/accuracy"], abs=2 / 64)
    assert got["utility/loss"] == pytest.approx(expected["utility/loss"], rel=1e-3)
