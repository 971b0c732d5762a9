"""How the board shows privacy beyond the claimed epsilon: the accountants' spread, and what it never ranks.

* Every DP run logs its epsilon under three accountants (``privacy/epsilon_rdp``, ``_prv``, ``_pld``)
  for the same noise, sampling and steps. Per run and unit of privacy the board derives
  ``privacy/epsilon_spread`` (largest minus smallest of them) with its ends, shown as
  "smallest–largest" right after the claimed ``privacy/epsilon``: how much the choice of accountant
  alone moves the number.
* The per-accountant values and a data-dependent epsilon (``privacy/epsilon_data_dependent``, PATE's
  bound on the votes it saw, itself private) are shown but never ranked: no direction, no best mark,
  never a Pareto axis, whatever a task's schema says.
"""

from __future__ import annotations

import pandas as pd

from suite.schema import Metric

CLAIM = "privacy/epsilon"
AUDIT = "privacy/audit_epsilon_lb"
SPREAD = "privacy/epsilon_spread"
ACCOUNTANTS = {"privacy/epsilon_rdp": "rdp", "privacy/epsilon_prv": "prv", "privacy/epsilon_pld": "pld"}
DATA_DEPENDENT = "privacy/epsilon_data_dependent"
NEVER_RANKED = frozenset({DATA_DEPENDENT, SPREAD, *ACCOUNTANTS})
SPREAD_SPEC = Metric("none", "epsilon", "largest minus smallest epsilon of the accountants (rdp, prv, pld) "
                                            "for the same noise, sampling and steps; shown as smallest–largest")
# Columns that sit beside the claimed epsilon, in this order (the claim first).
_BESIDE_CLAIM = (CLAIM, SPREAD, *ACCOUNTANTS, DATA_DEPENDENT, AUDIT)


def spec_of(metric: str, declared: Metric) -> Metric:
    """The spec the board uses: the spread's own, and no direction for what is never ranked."""
    if metric == SPREAD:
        return SPREAD_SPEC
    if metric in NEVER_RANKED and declared.direction != "none":
        return Metric("none", declared.unit, declared.description)
    return declared


def beside_claim(metric: str) -> int | None:
    """Position of ``metric`` among the columns that follow the claimed epsilon, or None."""
    return _BESIDE_CLAIM.index(metric) if metric in _BESIDE_CLAIM else None


def add_spread(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run and unit: ``metrics.privacy/epsilon_spread [unit]`` and its ends ``spread_lo/hi [unit]``.

    Only where at least two accountants' epsilons exist (one value has no spread).
    """
    units = sorted({c.rsplit(" [", 1)[1].rstrip("]") for c in runs
                    if c.startswith("metrics.privacy/epsilon_") and c.endswith("]")})
    for unit in units:
        columns = [f"metrics.{m} [{unit}]" for m in ACCOUNTANTS if f"metrics.{m} [{unit}]" in runs]
        if len(columns) < 2:
            continue
        values = runs[columns].astype(float)
        enough = values.notna().sum(axis=1) >= 2
        lo, hi = values.min(axis=1).where(enough), values.max(axis=1).where(enough)
        runs[f"metrics.{SPREAD} [{unit}]"] = hi - lo
        runs[f"spread_lo [{unit}]"] = lo
        runs[f"spread_hi [{unit}]"] = hi
    return runs


def add_spread_ends(table: pd.DataFrame, used: pd.DataFrame) -> pd.DataFrame:
    """``<spread column> lo`` and ``hi``: the mean over seeds of each run's smallest and largest epsilon."""
    grouped = used.groupby("config_id")
    for column in [c for c in used if c.startswith("spread_lo [")]:
        key = f"{SPREAD} [{column.split(' [', 1)[1]}"
        for end in ("lo", "hi"):
            means = grouped[column.replace("spread_lo", f"spread_{end}")].mean()
            table[f"{key} {end}"] = means.reindex(table["config_id"]).to_numpy()
    return table
