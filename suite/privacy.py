"""Privacy accounting as pure functions of a run's actual mechanism parameters.

The stateful accountants live in Opacus (``opacus.accountants``); these functions feed
them a history and return epsilon, so that a run's epsilon is always recomputed from the
noise multiplier, sampling rate and number of steps it really used.
"""

from __future__ import annotations

from collections.abc import Sequence

ACCOUNTANTS = ("rdp", "prv")

# (noise_multiplier, sample_rate, steps), as Opacus accountants keep their history.
History = Sequence[tuple[float, float, int]]


def dpsgd_epsilon(*, history: History, delta: float, accountant: str, eps_error: float = 0.01) -> float:
    """Epsilon of DP-SGD (Poisson-subsampled Gaussian mechanism) after ``history`` at ``delta``.

    >>> round(dpsgd_epsilon(history=[(1.0, 0.01, 1000)], delta=1e-5, accountant="rdp"), 2)
    1.39
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    for sigma, q, steps in history:
        if sigma < 0 or not 0 < q <= 1 or steps < 0:
            raise ValueError(f"bad history entry (noise={sigma}, sample_rate={q}, steps={steps})")
    from opacus.accountants import PRVAccountant, RDPAccountant

    if accountant == "rdp":
        acc = RDPAccountant()
        acc.history = [tuple(h) for h in history]
        return float(acc.get_epsilon(delta=delta))
    if accountant == "prv":
        acc = PRVAccountant()
        acc.history = [tuple(h) for h in history]
        return float(acc.get_epsilon(delta=delta, eps_error=eps_error))
    raise ValueError(f"unknown accountant {accountant!r}; allowed: {', '.join(ACCOUNTANTS)}")
