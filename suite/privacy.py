"""Privacy accounting as pure functions of a run's actual mechanism parameters.

The accountants are the libraries': Opacus' RDP (``opacus.accountants.analysis.rdp``) and PRV
(Gopi et al. 2021), and Google's ``dp_accounting`` for the privacy-loss distribution (PLD) and for
sampling without replacement. These functions feed them a history and return epsilon, so that a
run's epsilon is always recomputed from the noise multiplier, sampling rate and number of steps
it really used.

Which accountant can analyse which sampler (and under which neighbouring relation):

============  ==================  ===========================================================
sampler       accountants         neighbouring relation
============  ==================  ===========================================================
poisson       rdp, prv, pld       add-or-remove one record (Opacus' and dp_accounting's default)
none          rdp, prv, pld       any: without subsampling a Gaussian's guarantee depends only on
                                  its sensitivity, which the caller computes for its relation
fixed_size    rdp                 replace one record (dp_accounting's SampledWithoutReplacement
                                  event, Wang, Balle, Kasiviswanathan 2019, Thm 27); Opacus' RDP
                                  and PRV and dp_accounting's PLD do not analyse it
============  ==================  ===========================================================

A caller learns which accountants apply from :func:`accountants_for`; :func:`all_epsilons`
returns exactly those, and :func:`dpsgd_epsilon` raises ``ValueError`` for a pair that does not
apply rather than silently analysing another sampler.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

ACCOUNTANTS = ("rdp", "prv", "pld")
SAMPLERS = ("poisson", "fixed_size", "none")
EPSILON_METRICS = {"rdp": "privacy/epsilon_rdp", "prv": "privacy/epsilon_prv", "pld": "privacy/epsilon_pld"}
_APPLIES = {"poisson": ACCOUNTANTS, "none": ACCOUNTANTS, "fixed_size": ("rdp",)}

# dp_accounting's PLD rounds every privacy loss *up* to this grid (pessimistic estimate), so its
# epsilon stays an upper bound. Measured against a 10x finer grid on the dpsgd quick grid: within
# 5e-4 relative (largest at epsilon 0.91), at a tenth of the cost (0.01-0.08 s a history, not 0.05-0.75 s).
PLD_DISCRETIZATION = 1e-3

# Opacus' default RDP orders (``RDPAccountant.DEFAULT_ALPHAS``, checked by a test), here so that
# config validation can use them without importing torch.
RDP_ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))
# The smallest target Opacus' PRV calibration reaches: it reports the upper end of an error band of
# width eps_error (0.01), and its noise search stops at sigma 1e6. Measured: 0.01 is reached (sigma
# 2560 at sample rates 1e-3 to 1), 0.008 is refused as "privacy budget too low".
_PRV_FLOOR = 0.01
_RDP_FLOOR_MARGIN = 1e-3  # the RDP floor is approached as sigma grows without bound; stay clear of it

# (noise_multiplier, sample_rate, steps), as Opacus accountants keep their history.
# noise_multiplier = noise std / L2 sensitivity under the sampler's neighbouring relation.
History = Sequence[tuple[float, float, int]]


def accountants_for(sampler: str) -> tuple[str, ...]:
    """The accountants that can analyse ``sampler`` (see the module docstring for the relations).

    >>> accountants_for("fixed_size")
    ('rdp',)
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    return _APPLIES[sampler]


def calibration_floor(*, accountant: str, delta: float) -> float:
    """The smallest target epsilon Opacus' noise calibration (``get_noise_multiplier``) can reach.

    RDP converts to (epsilon, delta) as ``rdp(a) + log1p(-1/a) - (log(delta) + log(a)) / (a - 1)``
    minimised over the orders ``a``; with no privacy loss at all (``rdp = 0``) that is still positive
    for small delta (0.103 at delta 1e-5 with orders up to 63), so no noise level reaches a target
    below it. A config asking for less is refused when it is read, not after data loading.

    >>> round(calibration_floor(accountant="rdp", delta=1e-5), 3)
    0.104
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if accountant == "prv":
        return _PRV_FLOOR
    if accountant != "rdp":
        raise ValueError(f"Opacus calibrates with rdp or prv, not {accountant!r}")
    conversion = min(math.log1p(-1 / a) - (math.log(delta) + math.log(a)) / (a - 1) for a in RDP_ORDERS)
    return max(conversion + _RDP_FLOOR_MARGIN, 0.0)


def dpsgd_epsilon(*, history: History, delta: float, accountant: str, eps_error: float = 0.01,
                  sampler: str = "poisson") -> float:
    """Epsilon of a subsampled Gaussian mechanism (DP-SGD) after ``history`` at ``delta``.

    ``sampler`` is how each step's batch was drawn: ``poisson`` (each record independently with
    probability ``sample_rate``), ``fixed_size`` (a batch of ``sample_rate * n`` records without
    replacement; replace-one relation, so the noise multiplier is std / replace-one sensitivity,
    e.g. std / (2 C) for a sum of vectors clipped to norm C) or ``none`` (every record every step:
    ``sample_rate`` must be 1; a Gaussian mechanism with sensitivity s and std sigma is the entry
    ``(sigma / s, 1.0, count)``). ``eps_error`` is the PRV accountant's error band (PRV reports
    its upper end); the RDP and PLD results are upper bounds by construction.

    Entries with zero steps compose to nothing and are dropped (an empty history costs
    epsilon 0); any entry with zero noise and at least one step has no finite guarantee
    (epsilon ``inf``).

    >>> round(dpsgd_epsilon(history=[(1.0, 0.01, 1000)], delta=1e-5, accountant="rdp"), 2)
    2.1
    """
    history = _checked(history, delta=delta, accountant=accountant, sampler=sampler, eps_error=eps_error)
    if not history:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in history):
        return math.inf  # no noise: RDP is infinite at every order (the PRV accountant overflows)
    if sampler == "fixed_size":
        return _rdp_without_replacement(history, delta)
    return {"rdp": _rdp, "prv": _prv, "pld": _pld}[accountant](history, delta, eps_error)


def all_epsilons(*, history: History, delta: float, sampler: str = "poisson") -> dict[str, float]:
    """Epsilon of ``history`` under every accountant that applies to ``sampler``, by metric key.

    ``{"privacy/epsilon_rdp": ..., "privacy/epsilon_prv": ..., "privacy/epsilon_pld": ...}`` for
    ``poisson`` and ``none``; only ``privacy/epsilon_rdp`` for ``fixed_size`` (the others cannot
    analyse it: see :func:`accountants_for`). PRV uses the default ``eps_error``, so the value for a
    run's configured accountant equals :func:`dpsgd_epsilon` with that accountant.
    """
    return {EPSILON_METRICS[name]: dpsgd_epsilon(history=history, delta=delta, accountant=name, sampler=sampler)
            for name in accountants_for(sampler)}


def _checked(history: History, *, delta: float, accountant: str, sampler: str,
             eps_error: float) -> list[tuple[float, float, int]]:
    """The history without zero-step entries, after every argument is checked."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; allowed: {', '.join(ACCOUNTANTS)}")
    if accountant not in accountants_for(sampler):
        raise ValueError(f"the {accountant} accountant cannot analyse {sampler} sampling; accountants for "
                         f"{sampler}: {', '.join(accountants_for(sampler))}")
    if not 0 < eps_error < math.inf:
        raise ValueError(f"eps_error must be positive and finite, got {eps_error}")
    for sigma, q, steps in history:
        # Written so that NaN fails every check: a NaN or infinite noise multiplier sends
        # Opacus' RDP and PRV analyses into loops that never end.
        if not 0 <= sigma < math.inf or not 0 < q <= 1 or not 0 <= steps < math.inf or int(steps) != steps:
            raise ValueError(f"bad history entry (noise={sigma}, sample_rate={q}, steps={steps})")
        if sampler == "none" and q != 1:
            raise ValueError(f"sampler none means no subsampling: sample_rate must be 1, got {q}")
    # Opacus' PRV accountant divides by zero on a zero-step entry and fails on an empty
    # history, and its RDP conversion turns a zero-step entry into a positive epsilon.
    return [(float(sigma), float(q), int(steps)) for sigma, q, steps in history if steps > 0]


def _rdp(history: list[tuple[float, float, int]], delta: float, eps_error: float) -> float:
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = list(history)
    return float(acc.get_epsilon(delta=delta))


def _prv(history: list[tuple[float, float, int]], delta: float, eps_error: float) -> float:
    from opacus.accountants import PRVAccountant

    acc = PRVAccountant()
    acc.history = list(history)
    with warnings.catch_warnings():
        # At sample rate 1 Opacus' PRV domain takes log(0) in a branch np.where then discards.
        warnings.filterwarnings("ignore", message="divide by zero encountered in log", category=RuntimeWarning)
        return float(acc.get_epsilon(delta=delta, eps_error=eps_error))


def _pld(history: list[tuple[float, float, int]], delta: float, eps_error: float) -> float:
    import dp_accounting

    acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    for sigma, q, steps in history:
        acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    return float(acc.get_epsilon(delta))


def _rdp_without_replacement(history: list[tuple[float, float, int]], delta: float) -> float:
    """dp_accounting's RDP of sampling without replacement (replace-one relation), at Opacus' orders."""
    import dp_accounting

    relation = dp_accounting.NeighboringRelation.REPLACE_ONE
    acc = dp_accounting.rdp.RdpAccountant(list(RDP_ORDERS), relation)
    for sigma, q, steps in history:
        # The analysis uses the ratio sample_size / dataset_size only; a float's exact integer ratio
        # gives back q itself (int / int division is correctly rounded).
        sample_size, dataset_size = q.as_integer_ratio()
        event = dp_accounting.SampledWithoutReplacementDpEvent(dataset_size, sample_size,
                                                               dp_accounting.GaussianDpEvent(sigma))
        acc.compose(event, steps)
    return float(acc.get_epsilon(delta))
