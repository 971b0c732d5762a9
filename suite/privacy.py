"""Privacy accounting as pure functions of a run's actual mechanism parameters.

The stateful accountants live in Opacus (``opacus.accountants``); these functions feed
them a history and return epsilon, so that a run's epsilon is always recomputed from the
noise multiplier, sampling rate and number of steps it really used.
"""

from __future__ import annotations

import math
import warnings
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


# --------------------------------------------------------------------------- three accountants
# A minimal version of the shared API, written by the labeldp branch for PATE-FM; the privacy
# branch's fuller version (fixed-size sampling, its own checks) supersedes it at merge.

SAMPLERS = ("poisson", "fixed_size", "none")  # "none": no subsampling (sample_rate 1, e.g. PATE's queries)


def all_epsilons(*, history: History, delta: float, sampler: str = "poisson") -> dict[str, float]:
    """Epsilon of one history under Opacus' RDP and PRV accountants and dp-accounting's PLD.

    ``history`` entries are ``(noise_std / l2_sensitivity, sample_rate, count)``; with
    ``sampler="none"`` every sample rate must be 1 (a Gaussian mechanism composed ``count``
    times), with ``"poisson"`` each entry is a Poisson-subsampled Gaussian. This minimal
    version does not analyse ``"fixed_size"``.

    Example: four Gaussian mechanisms of noise multiplier 1.5,
    ``all_epsilons(history=[(1.5, 1.0, 4)], delta=1e-5, sampler="none")``.
    """
    if sampler not in ("poisson", "none"):
        raise ValueError(f"sampler {sampler!r} is not analysed here; allowed: poisson, none")
    if sampler == "none" and any(q != 1 for _, q, _ in history):
        raise ValueError("sampler 'none' means no subsampling: every sample rate must be 1")
    with warnings.catch_warnings():
        # Opacus' PRV takes log(1 - q), -inf at q = 1, in a branch it then discards; its RDP warns
        # when the best order is its largest one (the bound is then loose, which is what it is).
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", "Optimal order is the largest alpha", UserWarning)
        out = {f"privacy/epsilon_{a}": dpsgd_epsilon(history=history, delta=delta, accountant=a) for a in ACCOUNTANTS}
    out["privacy/epsilon_pld"] = _pld_epsilon(history=history, delta=delta)
    return out


def _pld_epsilon(*, history: History, delta: float) -> float:
    """dp-accounting's privacy-loss-distribution accountant on the same history."""
    history = [(sigma, q, steps) for sigma, q, steps in history if steps > 0]
    if not history:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in history):
        return math.inf
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant

    def event(sigma: float, q: float) -> dp_accounting.DpEvent:
        gaussian = dp_accounting.GaussianDpEvent(sigma)
        return gaussian if q == 1 else dp_accounting.PoissonSampledDpEvent(q, gaussian)

    accountant = pld_privacy_accountant.PLDAccountant()
    accountant.compose(dp_accounting.ComposedDpEvent(
        [dp_accounting.SelfComposedDpEvent(event(sigma, q), steps) for sigma, q, steps in history]))
    return float(accountant.get_epsilon(delta))
