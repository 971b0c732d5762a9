"""Privacy accounting as pure functions of a run's actual mechanism parameters.

The stateful accountants live in Opacus (``opacus.accountants``); these functions feed
them a history and return epsilon, so that a run's epsilon is always recomputed from the
noise multiplier, sampling rate and number of steps it really used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

ACCOUNTANTS = ("rdp", "prv", "pld")
# How a step's batch is drawn: "poisson" (each unit independently with probability q),
# "fixed_size" (a fixed-size batch without replacement), "none" (no subsampling: q must be 1).
SAMPLERS = ("poisson", "fixed_size", "none")

# (noise_multiplier, sample_rate, steps), as Opacus accountants keep their history.
History = Sequence[tuple[float, float, int]]


def dpsgd_epsilon(*, history: History, delta: float, accountant: str, eps_error: float = 0.01,
                  sampler: str = "poisson") -> float:
    """Epsilon of DP-SGD (Poisson-subsampled Gaussian mechanism) after ``history`` at ``delta``.

    Entries with zero steps compose to nothing and are dropped (an empty history costs
    epsilon 0); any entry with zero noise and at least one step has no finite guarantee
    (epsilon ``inf``, as Opacus' RDP analysis says).

    >>> round(dpsgd_epsilon(history=[(1.0, 0.01, 1000)], delta=1e-5, accountant="rdp"), 2)
    2.1
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; allowed: {', '.join(ACCOUNTANTS)}")
    _check_sampler(sampler, history)
    for sigma, q, steps in history:
        # Written so that NaN fails every check: a NaN or infinite noise multiplier sends
        # Opacus' RDP and PRV analyses into loops that never end.
        if not 0 <= sigma < math.inf or not 0 < q <= 1 or not steps >= 0:
            raise ValueError(f"bad history entry (noise={sigma}, sample_rate={q}, steps={steps})")
    # Opacus' PRV accountant divides by zero on a zero-step entry and fails on an empty
    # history, and its RDP conversion turns a zero-step entry into a positive epsilon.
    history = [(sigma, q, steps) for sigma, q, steps in history if steps > 0]
    if not history:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in history):
        return math.inf  # no noise: RDP is infinite at every order (the PRV accountant overflows)
    if accountant == "pld":
        return _pld_epsilon(history, delta)
    from opacus.accountants import PRVAccountant, RDPAccountant

    if accountant == "rdp":
        acc = RDPAccountant()
        acc.history = list(history)
        return float(acc.get_epsilon(delta=delta))
    acc = PRVAccountant()
    acc.history = list(history)
    return float(acc.get_epsilon(delta=delta, eps_error=eps_error))


def all_epsilons(*, history: History, delta: float, sampler: str = "poisson") -> dict[str, float]:
    """Epsilon of one history under each accountant that can analyse its sampler.

    Keys ``privacy/epsilon_<accountant>``. Poisson sampling and no sampling: RDP and PRV
    (Opacus) and PLD (Google's ``dp_accounting``), all for the add-or-remove-one relation.
    """
    return {f"privacy/epsilon_{name}": dpsgd_epsilon(history=history, delta=delta, accountant=name, sampler=sampler)
            for name in ACCOUNTANTS}


def _check_sampler(sampler: str, history: History) -> None:
    # A minimal version of the shared API (the privacy helper's branch has the full one):
    # fixed-size sampling without replacement needs the data set's size, which a
    # (noise, rate, steps) history does not carry, so it is refused rather than analysed as Poisson.
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    if sampler == "fixed_size":
        raise ValueError("sampler 'fixed_size' is not analysed here: use 'poisson' or 'none'")
    if sampler == "none" and any(q != 1 for _, q, steps in history if steps > 0):
        raise ValueError("sampler 'none' means no subsampling: every sample_rate must be 1")


def _pld_epsilon(history: History, delta: float) -> float:
    """Privacy-loss-distribution epsilon of the Poisson-subsampled Gaussian (``dp_accounting``)."""
    from dp_accounting import dp_event, pld

    acc = pld.PLDAccountant()  # add-or-remove-one, as Opacus' analyses
    for sigma, q, steps in history:
        event = dp_event.GaussianDpEvent(sigma)
        acc.compose(event if q == 1 else dp_event.PoissonSampledDpEvent(q, event), int(steps))
    return float(acc.get_epsilon(delta))
