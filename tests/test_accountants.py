"""The three accountants of ``suite.privacy`` side by side: published values, an exact reference,
the samplers each one can analyse, and properties every accountant must have.

* Opacus' own tests: sigma 1.5, q 0.04 give RDP 7.32911117143 after 2,250 steps and PRV
  6.777395712150674 after 2,249 (its PRV test counts ``int(90 // 0.04)`` steps, and ``90 // 0.04``
  is 2249.0 in floating point; its RDP test counts ``int(90 / 0.04)`` = 2250).
* Without subsampling, k Gaussian steps are one Gaussian with std sigma / sqrt(k), whose exact
  privacy profile is known in closed form (Balle and Wang 2018, Thm 8): every accountant must be
  above it (a valid bound), PLD and PRV close to it, RDP looser.
"""

from __future__ import annotations

import math
import time
import warnings

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from scipy import optimize
from scipy.stats import norm

import suite.privacy as privacy
from suite.privacy import (ACCOUNTANTS, EPSILON_METRICS, SAMPLERS, accountants_for, all_epsilons,
                           calibration_floor, dpsgd_epsilon)

DELTA = 1e-5
OPACUS_RDP = 7.32911117143  # opacus/tests/accountants_test.py, test_rdp_accountant (2,250 steps)
OPACUS_PRV = 6.777395712150674  # the same file, test_prv_accountant (2,249 steps)


def test_published_rdp_and_prv_values_and_pld_beside_them() -> None:
    rdp = dpsgd_epsilon(history=[(1.5, 0.04, 2250)], delta=DELTA, accountant="rdp")
    assert rdp == pytest.approx(OPACUS_RDP, abs=1e-9)
    prv = dpsgd_epsilon(history=[(1.5, 0.04, 2249)], delta=DELTA, accountant="prv")
    assert prv == pytest.approx(OPACUS_PRV, abs=1e-5)  # Opacus checks 7 places; its FFT grid may move the 6th
    # At 2,250 steps (measured 6.7791): one more step costs 0.0017.
    prv_2250 = dpsgd_epsilon(history=[(1.5, 0.04, 2250)], delta=DELTA, accountant="prv")
    assert prv < prv_2250 < prv + 0.005
    # PLD (dp_accounting, pessimistic grid 1e-3; measured 6.7695) beside PRV: both numerical
    # accountants of the same privacy-loss distribution, PRV's value the top of its 0.01 error band.
    pld = dpsgd_epsilon(history=[(1.5, 0.04, 2250)], delta=DELTA, accountant="pld")
    assert prv_2250 - 0.02 <= pld <= prv_2250
    assert pld < rdp  # RDP's conversion to (epsilon, delta) is the loosest of the three


def _exact_gaussian_epsilon(sigma: float, steps: int, delta: float) -> float:
    """Smallest epsilon of ``steps`` Gaussian mechanisms (sensitivity 1, std sigma) at ``delta``:
    delta(eps) = Phi(1/(2s) - eps s) - exp(eps) Phi(-1/(2s) - eps s) with s = sigma / sqrt(steps)."""
    s = sigma / math.sqrt(steps)

    def excess(eps: float) -> float:
        return norm.cdf(0.5 / s - eps * s) - math.exp(eps + norm.logcdf(-0.5 / s - eps * s)) - delta

    return optimize.brentq(excess, 0.0, 500.0, xtol=1e-12)


@pytest.mark.parametrize(("sigma", "steps"), [(1.0, 1), (2.0, 10), (8.0, 100), (30.0, 300)])
def test_no_subsampling_is_the_exact_gaussian_within_each_accountants_error(sigma: float, steps: int) -> None:
    exact = _exact_gaussian_epsilon(sigma, steps, DELTA)
    got = all_epsilons(history=[(sigma, 1.0, steps)], delta=DELTA, sampler="none")
    assert set(got) == set(EPSILON_METRICS.values())
    # Measured: PLD exceeds the exact value by < 2e-4 relative, PRV by < eps_error = 0.01, RDP by 5-40%.
    assert exact <= got["privacy/epsilon_pld"] <= exact * 1.002 + 1e-3
    assert exact <= got["privacy/epsilon_prv"] <= exact + 0.011
    assert got["privacy/epsilon_rdp"] >= got["privacy/epsilon_pld"]


def test_no_subsampling_equals_poisson_at_rate_one() -> None:
    history = [(3.0, 1.0, 40)]
    assert all_epsilons(history=history, delta=DELTA, sampler="none") == \
        all_epsilons(history=history, delta=DELTA, sampler="poisson")


def test_sampler_none_refuses_subsampled_entries() -> None:
    with pytest.raises(ValueError, match="sampler none means no subsampling: sample_rate must be 1"):
        all_epsilons(history=[(3.0, 1.0, 4), (3.0, 0.5, 4)], delta=DELTA, sampler="none")


def test_which_accountants_apply_to_each_sampler() -> None:
    assert accountants_for("poisson") == accountants_for("none") == ACCOUNTANTS == ("rdp", "prv", "pld")
    assert accountants_for("fixed_size") == ("rdp",)
    assert set(SAMPLERS) == {"poisson", "fixed_size", "none"}
    with pytest.raises(ValueError, match="unknown sampler 'shuffle'; allowed: poisson, fixed_size, none"):
        accountants_for("shuffle")
    assert list(all_epsilons(history=[(1.0, 0.1, 10)], delta=DELTA, sampler="fixed_size")) == ["privacy/epsilon_rdp"]


@pytest.mark.parametrize("accountant", ["prv", "pld"])
def test_an_accountant_that_cannot_analyse_fixed_size_batches_refuses(accountant: str) -> None:
    with pytest.raises(ValueError, match=f"the {accountant} accountant cannot analyse fixed_size sampling; "
                                         "accountants for fixed_size: rdp"):
        dpsgd_epsilon(history=[(1.0, 0.1, 10)], delta=DELTA, accountant=accountant, sampler="fixed_size")


def test_fixed_size_batches_under_replace_one() -> None:
    """Sampling m of n without replacement, replace-one relation (dp_accounting, Wang et al. 2019)."""
    sigma = 1.1
    fixed = dpsgd_epsilon(history=[(sigma, 1 / 23, 345)], delta=DELTA, accountant="rdp", sampler="fixed_size")
    poisson = dpsgd_epsilon(history=[(sigma, 1 / 23, 345)], delta=DELTA, accountant="rdp")
    # Replacing a record moves the batch by up to two add-or-remove steps: measured 9.55 vs 4.94.
    assert 1.5 * poisson < fixed < 2.5 * poisson
    # A "sample" of every record is the Gaussian mechanism itself: both libraries' RDP agree.
    whole = dpsgd_epsilon(history=[(sigma, 1.0, 30)], delta=DELTA, accountant="rdp", sampler="fixed_size")
    assert whole == pytest.approx(dpsgd_epsilon(history=[(sigma, 1.0, 30)], delta=DELTA, accountant="rdp"),
                                  rel=1e-9)
    # Smaller batches leak less.
    assert dpsgd_epsilon(history=[(sigma, 1 / 46, 345)], delta=DELTA, accountant="rdp",
                         sampler="fixed_size") < fixed


def test_all_epsilons_is_each_accountant_alone() -> None:
    history = [(1.3, 1 / 22, 330), (2.0, 1 / 22, 100)]
    got = all_epsilons(history=history, delta=DELTA)
    for name in ACCOUNTANTS:
        assert got[EPSILON_METRICS[name]] == dpsgd_epsilon(history=history, delta=DELTA, accountant=name)


def test_all_three_cost_well_under_a_second_on_the_dpsgd_quick_grid() -> None:
    """Not a benchmark (benchmarks/accountants.py is): a guard against an accidental 10x (a finer PLD
    grid, a smaller PRV eps_error). Measured on a loaded 2-core machine: 0.1-0.4 s CPU a history."""
    start = time.process_time()
    all_epsilons(history=[(0.75, 1 / 22, 330)], delta=DELTA)  # the quick grid's smallest noise (epsilon 8)
    assert time.process_time() - start < 5.0


# --------------------------------------------------------------------------- properties

sigmas = st.floats(0.7, 8.0)
rates = st.floats(1e-3, 0.25)
step_counts = st.integers(1, 1000)


# Few examples: each costs up to ~0.5 s of PRV and PLD accounting; no shrinking (see test_dpsgd_privacy).
@settings(max_examples=8, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(sigma=sigmas, other=sigmas, q=rates, steps=step_counts, more=st.integers(0, 1000),
       accountant=st.sampled_from(["prv", "pld"]))
def test_numerical_accountants_fall_with_noise_and_rise_with_steps(sigma: float, other: float, q: float, steps: int,
                                                                   more: int, accountant: str) -> None:
    low, high = sorted((sigma, other))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eps = dpsgd_epsilon(history=[(low, q, steps)], delta=DELTA, accountant=accountant)
        assert 0 < eps < math.inf
        # PRV's value is the top of an error band of width eps_error; PLD's grid rounds by 1e-3 per loss value.
        slack = 0.011 if accountant == "prv" else 1e-6
        assert dpsgd_epsilon(history=[(high, q, steps)], delta=DELTA, accountant=accountant) <= eps + slack
        assert dpsgd_epsilon(history=[(low, q, steps + more)], delta=DELTA, accountant=accountant) >= eps - slack


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_degenerate_histories_under_every_accountant(sampler: str) -> None:
    q = 1.0 if sampler == "none" else 0.1
    for name in accountants_for(sampler):
        eps = lambda history: dpsgd_epsilon(history=history, delta=DELTA, accountant=name, sampler=sampler)  # noqa: E731
        assert eps([]) == 0.0
        assert eps([(1.0, q, 0)]) == 0.0
        assert eps([(1.0, q, 10), (0.0, q, 1)]) == math.inf
        assert eps([(1.0, q, 10), (2.0, q, 0)]) == eps([(1.0, q, 10)])


@pytest.mark.parametrize("steps", [2.5, math.inf, math.nan, -1])
def test_steps_must_be_a_whole_number(steps: float) -> None:
    with pytest.raises(ValueError, match="bad history entry"):
        dpsgd_epsilon(history=[(1.0, 0.1, steps)], delta=DELTA, accountant="pld")


@pytest.mark.parametrize("eps_error", [0.0, -1.0, math.inf, math.nan])
def test_eps_error_must_be_positive_and_finite(eps_error: float) -> None:
    with pytest.raises(ValueError, match="eps_error must be positive and finite"):
        dpsgd_epsilon(history=[(1.0, 0.1, 10)], delta=DELTA, accountant="prv", eps_error=eps_error)


def test_rdp_orders_are_opacus_defaults() -> None:
    from opacus.accountants import RDPAccountant

    assert privacy.RDP_ORDERS == tuple(RDPAccountant.DEFAULT_ALPHAS)


@pytest.mark.parametrize("delta", [1e-5, 1e-3])
@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_calibration_floor_is_where_opacus_calibration_starts_to_work(accountant: str, delta: float) -> None:
    """Opacus reaches a target just above the floor and refuses one below it."""
    from opacus.accountants.utils import get_noise_multiplier

    floor = calibration_floor(accountant=accountant, delta=delta)
    calibrate = lambda eps: get_noise_multiplier(target_epsilon=eps, target_delta=delta,  # noqa: E731
                                                 sample_rate=1 / 22, epochs=15, accountant=accountant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert 0 < calibrate(floor) < 1e6
        below = floor * 0.7 if accountant == "prv" else floor - 2 * privacy._RDP_FLOOR_MARGIN
        with pytest.raises(ValueError, match="privacy budget is too low"):
            calibrate(below)
