"""Privacy accounting as pure functions of a run's actual mechanism parameters.

The stateful accountants live in Opacus (``opacus.accountants``); these functions feed
them a history and return epsilon, so that a run's epsilon is always recomputed from the
noise multiplier, sampling rate and number of steps it really used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

ACCOUNTANTS = ("rdp", "prv")

# (noise_multiplier, sample_rate, steps), as Opacus accountants keep their history.
History = Sequence[tuple[float, float, int]]


def dpsgd_epsilon(*, history: History, delta: float, accountant: str, eps_error: float = 0.01) -> float:
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
    from opacus.accountants import PRVAccountant, RDPAccountant

    if accountant == "rdp":
        acc = RDPAccountant()
        acc.history = list(history)
        return float(acc.get_epsilon(delta=delta))
    acc = PRVAccountant()
    acc.history = list(history)
    return float(acc.get_epsilon(delta=delta, eps_error=eps_error))


def all_epsilons(*, history: History, delta: float, sampler: str = "poisson") -> dict[str, float]:
    """Epsilon of the same DP-SGD history by three accountants, as ``privacy/epsilon_{rdp,prv,pld}`` metrics.

    RDP and PRV are Opacus' (:func:`dpsgd_epsilon`); PLD is Google's ``dp-accounting`` (privacy loss
    distributions, add-or-remove-one neighbours, as Opacus' analyses), which serves as the cross-check.
    Only Poisson subsampling is analysed here.

    A minimal version written for the memorization family; the privacy work (issue 13) owns this API and
    may extend it (other samplers): keep the signature and the keys.

    >>> sorted(all_epsilons(history=[(1.0, 0.01, 1000)], delta=1e-5))
    ['privacy/epsilon_pld', 'privacy/epsilon_prv', 'privacy/epsilon_rdp']
    """
    if sampler != "poisson":
        raise ValueError(f"sampler {sampler!r} is not analysed here; allowed: poisson")
    out = {f"privacy/epsilon_{name}": dpsgd_epsilon(history=history, delta=delta, accountant=name)
           for name in ACCOUNTANTS}
    out["privacy/epsilon_pld"] = _pld_epsilon(history=history, delta=delta)
    return out


def _pld_epsilon(*, history: History, delta: float) -> float:
    """dp-accounting's PLD accountant over Poisson-subsampled Gaussian steps."""
    dpsgd_epsilon(history=history, delta=delta, accountant="rdp")  # the same checks of delta and every entry
    history = [(sigma, q, steps) for sigma, q, steps in history if steps > 0]
    if not history:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in history):
        return math.inf
    from dp_accounting import NeighboringRelation, dp_event
    from dp_accounting.pld.pld_privacy_accountant import PLDAccountant

    accountant = PLDAccountant(NeighboringRelation.ADD_OR_REMOVE_ONE)
    for sigma, q, steps in history:
        step = dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma))
        accountant.compose(dp_event.SelfComposedDpEvent(step, int(steps)))
    return float(accountant.get_epsilon(delta))
