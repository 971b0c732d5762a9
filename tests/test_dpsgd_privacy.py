"""The DP-SGD maths behind the dpsgd task, checked against first principles and a second library.

* per-example gradients (hooks, functorch) equal gradients of each example taken alone;
* clipping (hooks, functorch, ghost) gives sum_i g_i * min(1, C/||g_i||) / expected_batch_size,
  with flat clipping over all parameters;
* the noise added to p.grad has standard deviation sigma * C / expected_batch_size;
* ``suite.privacy.dpsgd_epsilon`` agrees with Google's ``dp_accounting`` (RDP and PLD), and
  with a numerical integral of the subsampled Gaussian's Renyi divergence;
* properties of ``dpsgd_epsilon``: monotone in noise and steps, additive over a history, and
  bad inputs rejected.

No mocks: real Opacus wrappers, real optimizers, real accountants.
"""

from __future__ import annotations

import copy
import doctest
import math
import warnings

import dp_accounting
import numpy as np
import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from opacus import GradSampleModule, PrivacyEngine
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as opacus_rdp
from scipy import integrate
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import suite.privacy
from suite.privacy import dpsgd_epsilon
from tasks.dpsgd.models import digits_cnn, mnist_cnn

pytestmark = [
    pytest.mark.filterwarnings("ignore:Secure RNG turned off"),
    pytest.mark.filterwarnings("ignore:Full backward hook is firing"),
    pytest.mark.filterwarnings("ignore:Optimal order is the"),
    pytest.mark.filterwarnings("ignore:Using a non-full backward hook"),
]

DELTA = 1e-5
ORDERS = RDPAccountant.DEFAULT_ALPHAS
# (noise multiplier, sample rate, steps) as the task runs them: 23 steps an epoch, 15 epochs or 100 steps.
SETTINGS = [(sigma, 1 / 23, steps) for sigma in (0.9, 1.5, 3.2) for steps in (23 * 15, 100)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- gradients


def _batch(model_name: str, n: int, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    if model_name == "digits":
        return digits_cnn(10), torch.randn(n, 1, 8, 8), torch.randint(0, 10, (n,))
    return mnist_cnn(10), torch.randn(n, 1, 28, 28), torch.randint(0, 10, (n,))


def _per_example_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[list[torch.Tensor]]:
    """Gradient of each example's loss, one backward pass per example, plain torch."""
    grads = []
    for i in range(len(x)):
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        grads.append([p.grad.detach().clone() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("model_name", ["digits", "mnist"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("mode", ["hooks", "functorch"])
def test_per_sample_gradients_equal_a_microbatch_loop(mode: str, reduction: str, model_name: str) -> None:
    model, x, y = _batch(model_name, 8)
    expected = _per_example_grads(copy.deepcopy(model), x, y)
    gsm = GradSampleModule(model, batch_first=True, loss_reduction=reduction, force_functorch=mode == "functorch")
    nn.functional.cross_entropy(gsm(x), y, reduction=reduction).backward()
    params = list(model.parameters())
    assert len(params) == len(expected[0]) and len(params) >= 6
    for k, p in enumerate(params):
        assert p.grad_sample.shape == (len(x), *p.shape)
        for i in range(len(x)):
            # With "mean" Opacus rescales by the batch size, so grad_sample[i] is still the
            # gradient of example i's own loss.
            torch.testing.assert_close(p.grad_sample[i], expected[i][k], rtol=1e-4, atol=1e-6)
        # ...and the ordinary gradient is still the batch's.
        total = sum(expected[i][k] for i in range(len(x)))
        torch.testing.assert_close(p.grad, total if reduction == "sum" else total / len(x), rtol=1e-4, atol=1e-6)


def _private(mode: str, model: nn.Module, dataset: TensorDataset, batch_size: int, *, sigma: float, clip: float,
             seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, object]:
    """PrivacyEngine.make_private as the task calls it (Poisson sampling, default "mean" reduction)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: step() leaves the weights alone
    loader = DataLoader(dataset, batch_size=batch_size)
    made = PrivacyEngine(accountant="rdp").make_private(
        module=model, optimizer=optimizer, data_loader=loader, criterion=nn.CrossEntropyLoss(),
        noise_multiplier=sigma, max_grad_norm=clip, poisson_sampling=True, grad_sample_mode=mode,
        noise_generator=torch.Generator().manual_seed(seed),
    )
    if mode == "ghost":
        private, dp_optimizer, criterion, _ = made
    else:
        (private, dp_optimizer, _), criterion = made, nn.CrossEntropyLoss()
    return private, dp_optimizer, criterion


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ghost"])
def test_clipping_is_flat_and_divided_by_expected_batch_size(mode: str) -> None:
    # 24 examples, batches of 8: sample rate 1/3, expected batch size 8. The batch fed in
    # has 7 examples, as a Poisson batch may; the mean must still divide by 8.
    model, x_all, y_all = _batch("digits", 24, seed=1)
    x, y = x_all[:7], y_all[:7]
    reference = copy.deepcopy(model)
    grads = _per_example_grads(reference, x, y)
    flat = torch.stack([torch.cat([g.flatten() for g in gs]) for gs in grads])
    norms = flat.norm(dim=1)
    ranked = norms.sort().values
    clip = float(ranked[1] + ranked[2]) / 2  # two examples under the bound, five clipped
    factors = (clip / norms).clamp(max=1.0)
    assert int((factors < 1).sum()) == 5
    expected = [sum(factors[i] * grads[i][k] for i in range(len(x))) / 8 for k in range(len(grads[0]))]

    dataset = TensorDataset(x_all, y_all)
    private, optimizer, criterion = _private(mode, model, dataset, 8, sigma=0.0, clip=clip)
    assert optimizer.expected_batch_size == 8 and optimizer.loss_reduction == "mean"
    optimizer.zero_grad(set_to_none=True)
    criterion(private(x), y).backward()
    optimizer.step()
    for k, p in enumerate(model.parameters()):
        torch.testing.assert_close(p.grad, expected[k], rtol=1e-4, atol=1e-6)
    # Clipping really bit: the unclipped mean differs.
    unclipped = sum(grads[i][0] for i in range(len(x))) / 8
    assert not torch.allclose(next(model.parameters()).grad, unclipped, rtol=1e-2, atol=0)


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ghost"])
def test_noise_std_is_sigma_clip_over_expected_batch_size(mode: str) -> None:
    # Zero inputs into a bias-free linear layer: every per-example gradient is zero, so
    # p.grad after step() is the noise alone, 40,000 draws of it.
    sigma, clip, n, batch = 1.3, 0.7, 64, 16
    torch.manual_seed(0)
    model = nn.Linear(200, 200, bias=False)
    dataset = TensorDataset(torch.zeros(n, 200), torch.randint(0, 200, (n,)))
    private, optimizer, criterion = _private(mode, model, dataset, batch, sigma=sigma, clip=clip, seed=3)
    assert optimizer.expected_batch_size == batch
    x, y = dataset.tensors[0][:batch], dataset.tensors[1][:batch]
    optimizer.zero_grad(set_to_none=True)
    criterion(private(x), y).backward()
    optimizer.step()
    noise = model.weight.grad.flatten().double()
    std = sigma * clip / batch
    assert noise.numel() == 40_000
    assert noise.std().item() == pytest.approx(std, rel=0.03)  # sampling error ~0.35%
    assert abs(noise.mean().item()) < 4 * std / math.sqrt(noise.numel())
    within = (noise.abs() < std).double().mean().item()
    assert within == pytest.approx(math.erf(1 / math.sqrt(2)), abs=0.01)  # Gaussian: 68.3% within 1 std


# --------------------------------------------------------------------------- accounting


def _event(sigma: float, q: float, steps: int) -> dp_accounting.DpEvent:
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)


def _google_rdp(sigma: float, q: float, steps: int) -> dp_accounting.rdp.RdpAccountant:
    accountant = dp_accounting.rdp.RdpAccountant(ORDERS)
    accountant.compose(_event(sigma, q, steps))
    return accountant


@pytest.mark.parametrize(("sigma", "q", "steps"), SETTINGS)
def test_rdp_epsilon_matches_dp_accounting(sigma: float, q: float, steps: int) -> None:
    ours = dpsgd_epsilon(history=[(sigma, q, steps)], delta=DELTA, accountant="rdp")
    google = _google_rdp(sigma, q, steps)
    # Measured: relative difference <= 7.0e-4 (sigma 0.9, 345 steps), <= 1e-8 for sigma >= 1.5.
    assert ours == pytest.approx(google.get_epsilon(DELTA), rel=1e-3)
    # Like with like: both libraries convert RDP to (epsilon, delta) with the same bound
    # (Balle et al. 2020, Thm 21 / Canonne et al. 2020, Prop 12):
    #   eps = min_a rdp_a + log1p(-1/a) - log(delta * a) / (a - 1).
    # Fed Opacus' own RDP curve, dp_accounting's conversion gives dpsgd_epsilon to rounding.
    opacus_curve = opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=ORDERS)
    converted, _ = dp_accounting.rdp.rdp_privacy_accountant.compute_epsilon(ORDERS, opacus_curve, DELTA)
    assert ours == pytest.approx(converted, rel=1e-12)
    # The residual difference is in the RDP curves, at fractional orders only: at integer
    # orders both libraries sum the same binomial series and agree to rounding.
    google_curve = np.asarray(google._rdp)
    integer = np.array([float(a).is_integer() for a in ORDERS])
    np.testing.assert_allclose(opacus_curve[integer], google_curve[integer], rtol=1e-10)
    # At fractional orders dp_accounting 0.6 is never below Opacus (see the next test for
    # which of the two is exact).
    assert np.all(google_curve[~integer] >= opacus_curve[~integer] * (1 - 1e-12))


def _log_a_by_quadrature(q: float, sigma: float, alpha: float) -> float:
    """log E_{z ~ N(0, sigma^2)} [((1 - q) + q exp((2z - 1) / (2 sigma^2)))^alpha], by quadrature."""

    def integrand(z: float) -> float:
        log_pdf = -z * z / (2 * sigma**2) - math.log(sigma * math.sqrt(2 * math.pi))
        log_ratio = np.logaddexp(math.log1p(-q), math.log(q) + (2 * z - 1) / (2 * sigma**2))
        return math.exp(log_pdf + alpha * log_ratio)

    cuts = [-60, -10, 0, 10, 60, 200]
    return math.log(sum(integrate.quad(integrand, a * sigma, b * sigma, epsabs=0, epsrel=1e-13, limit=500)[0]
                        for a, b in zip(cuts, cuts[1:])))


@pytest.mark.parametrize("sigma", [0.9, 3.2])
@pytest.mark.parametrize("alpha", [1.1, 1.5, 2.1, 3.4, 7.0])
def test_opacus_rdp_curve_is_exact_at_fractional_orders(sigma: float, alpha: float) -> None:
    """Opacus' A_alpha against a numerical integral of its definition (Mironov et al. 2019, Sec. 3.3).

    Opacus matches the integral to ~1e-9 at every order. dp_accounting 0.6 overshoots at
    fractional orders (by 35% at alpha 1.1, 0.4% at 2.1): its series for fractional alpha
    adds |binom(alpha, i)| where the sign alternates for i > alpha (its _log_comb uses
    gammaln, which drops the sign), so it sums an upper bound. That is the residual in
    test_rdp_epsilon_matches_dp_accounting; it is conservative, and Opacus is the exact one.
    """
    q = 1 / 23
    exact = _log_a_by_quadrature(q, sigma, alpha)
    assert opacus_rdp._compute_log_a(q, sigma, alpha) == pytest.approx(exact, rel=1e-7)
    rdp = opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=[alpha])
    assert float(np.squeeze(rdp)) == pytest.approx(exact / (alpha - 1), rel=1e-7)


@pytest.mark.parametrize(("sigma", "q", "steps"), SETTINGS)
def test_prv_epsilon_matches_dp_accounting_pld(sigma: float, q: float, steps: int) -> None:
    pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    pld.compose(_event(sigma, q, steps))
    google = pld.get_epsilon(DELTA)
    # Opacus' PRV accountant returns the *upper* end of its error band, estimate + up to
    # eps_error: with the default eps_error 0.01 that alone is 1.9% of epsilon 0.52 (sigma 3.2,
    # 100 steps). Compare like with like by asking for a band well under 1%: eps_error 1e-3.
    # Measured: relative difference 2.1e-4 ... 2.0e-3.
    fine = dpsgd_epsilon(history=[(sigma, q, steps)], delta=DELTA, accountant="prv", eps_error=1e-3)
    assert fine == pytest.approx(google, rel=0.01)
    # What the task reports (eps_error 0.01) is an upper bound: never below the PLD value
    # (itself pessimistic), above it by about eps_error (measured 0.0100 ... 0.0104).
    reported = dpsgd_epsilon(history=[(sigma, q, steps)], delta=DELTA, accountant="prv")
    assert google <= reported <= google + 0.015
    # And PRV is tighter than RDP, as it should be.
    assert reported < dpsgd_epsilon(history=[(sigma, q, steps)], delta=DELTA, accountant="rdp")


def test_docstring_example() -> None:
    results = doctest.testmod(suite.privacy, raise_on_error=False, verbose=False)
    assert results.attempted == 3 and results.failed == 0
    assert round(dpsgd_epsilon(history=[(1.0, 0.01, 1000)], delta=1e-5, accountant="rdp"), 2) == 2.1


# --------------------------------------------------------------------------- properties

# Opacus' fractional-order series is slow for noise below ~0.7 (seconds a call at sigma 0.5,
# q 1e-3) and at high sample rates; these ranges keep a call under ~0.3 s.
sigmas = st.floats(0.7, 8.0)
rates = st.floats(1e-3, 0.25)
step_counts = st.integers(1, 2000)


# No shrinking: each example costs ~0.1-1 s of accounting, and shrinking a failure would
# take minutes; the unshrunk counterexample is reported as it is.
@settings(max_examples=20, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(sigma=sigmas, other=sigmas, q=rates, steps=step_counts, more=st.integers(0, 2000))
def test_rdp_epsilon_is_monotone_in_noise_and_steps(sigma: float, other: float, q: float, steps: int,
                                                    more: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        low, high = sorted((sigma, other))
        eps = dpsgd_epsilon(history=[(low, q, steps)], delta=DELTA, accountant="rdp")
        assert 0 < eps < math.inf
        assert dpsgd_epsilon(history=[(high, q, steps)], delta=DELTA, accountant="rdp") <= eps * (1 + 1e-9)
        longer = dpsgd_epsilon(history=[(low, q, steps + more)], delta=DELTA, accountant="rdp")
        assert longer >= eps * (1 - 1e-9)
        # RDP composes additively: a history split in two is the same mechanism.
        split = dpsgd_epsilon(history=[(low, q, steps), (low, q, more)], delta=DELTA, accountant="rdp")
        assert split == pytest.approx(longer, rel=1e-9)


bad_entries = st.one_of(
    st.tuples(st.floats(max_value=-1e-9, allow_infinity=False), rates, step_counts),   # negative noise
    st.tuples(st.sampled_from([math.nan, math.inf]), rates, step_counts),            # noise NaN or inf
    st.tuples(sigmas, st.sampled_from([0.0, -0.1, math.nan]), step_counts),           # rate 0, < 0, NaN
    st.tuples(sigmas, st.floats(1.0, 1e6, exclude_min=True), step_counts),            # rate > 1
    st.tuples(sigmas, rates, st.integers(max_value=-1)),                              # negative steps
)


@settings(max_examples=20, deadline=None)
@given(entry=bad_entries, accountant=st.sampled_from(["rdp", "prv", "pld"]))
def test_bad_history_entries_are_rejected(entry: tuple[float, float, int], accountant: str) -> None:
    with pytest.raises(ValueError, match="bad history entry"):
        dpsgd_epsilon(history=[(1.0, 0.1, 10), entry], delta=DELTA, accountant=accountant)


@settings(max_examples=20, deadline=None)
@given(delta=st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0), st.just(math.nan)),
       accountant=st.sampled_from(["rdp", "prv", "pld"]))
def test_bad_delta_is_rejected(delta: float, accountant: str) -> None:
    with pytest.raises(ValueError, match="delta"):
        dpsgd_epsilon(history=[(1.0, 0.1, 10)], delta=delta, accountant=accountant)


@pytest.mark.parametrize("name", ["RDP", "gdp", "", "PLD"])
def test_unknown_accountant_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="unknown accountant"):
        dpsgd_epsilon(history=[(1.0, 0.1, 10)], delta=DELTA, accountant=name)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_degenerate_histories(accountant: str) -> None:
    """No steps cost nothing; steps without noise have no finite guarantee. (Before the fix the
    PRV accountant crashed on both, and RDP charged 0.10 for a zero-step entry.)"""
    assert dpsgd_epsilon(history=[], delta=DELTA, accountant=accountant) == 0.0
    assert dpsgd_epsilon(history=[(1.0, 0.1, 0)], delta=DELTA, accountant=accountant) == 0.0
    assert dpsgd_epsilon(history=[(1.0, 0.1, 10), (0.0, 0.1, 1)], delta=DELTA, accountant=accountant) == math.inf
    with_empty = dpsgd_epsilon(history=[(1.0, 0.1, 10), (2.0, 0.5, 0)], delta=DELTA, accountant=accountant)
    assert with_empty == dpsgd_epsilon(history=[(1.0, 0.1, 10)], delta=DELTA, accountant=accountant)
