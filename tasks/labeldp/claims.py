"""The claims of "Antipodes of Label Differential Privacy: PATE and ALIBI" that the labeldp task tests.

All three statements are quoted from the paper's abstract (NeurIPS 2021); how each became a paired
test (which methods, which budgets, which metric) is in its ``note``, chosen before any verdict
was seen.
"""

from suite.claims import Claim

ANTIPODES = "Malek, Mironov, Prasad, Shilov, Tramer (2021), Antipodes of Label Differential Privacy: PATE and ALIBI"
SMALL_EPSILON = (0.5, 1.0)  # the quick grid's two smallest label budgets: "very strong privacy levels"

CLAIMS = (
    Claim(
        "alibi_beats_rr", paper=ANTIPODES, quote=True, source="abstract",
        statement="While recent work by Ghazi et al. proposed Label DP schemes based on a randomized response "
                  "mechanism, we argue that additive Laplace noise coupled with Bayesian inference (ALIBI) is a "
                  "better fit for typical ML tasks.",
        a={"method": "alibi"}, b={"method": "rr"}, metric="utility/accuracy",
        note="ALIBI against plain randomized response at every label epsilon of the grid, paired by epsilon "
             "and seed; no margin."),
    Claim(
        "pate_fm_beats_alibi_at_small_epsilon", paper=ANTIPODES, quote=True, source="abstract",
        statement="Moreover, we show how to achieve very strong privacy levels in some regimes, with our "
                  "adaptation of the PATE framework that builds on recent advances in semi-supervised learning.",
        a={"method": "pate_fm"}, b={"method": "alibi"}, metric="utility/accuracy", where={"epsilon": SMALL_EPSILON},
        note="Read as: at the smallest label budgets (epsilon 0.5 and 1), PATE-FM is more accurate than ALIBI. "
             "PATE-FM's own keys (delta, teachers) are set on its side only and not paired on."),
    Claim(
        "pate_fm_beats_rr_at_small_epsilon", paper=ANTIPODES, quote=True, source="abstract",
        statement="Moreover, we show how to achieve very strong privacy levels in some regimes, with our "
                  "adaptation of the PATE framework that builds on recent advances in semi-supervised learning.",
        a={"method": "pate_fm"}, b={"method": "rr"}, metric="utility/accuracy", where={"epsilon": SMALL_EPSILON},
        note="Read as: at the smallest label budgets (epsilon 0.5 and 1), PATE-FM is more accurate than "
             "randomized response."),
    Claim(
        "tighter_analysis_less_private", paper=ANTIPODES, quote=True, source="abstract",
        statement="Our evaluation suggests that comparing different algorithms according to their provable DP "
                  "guarantees can be misleading and favor a less private algorithm with a tighter analysis.",
        a={"method": "alibi"}, b={"method": "pate_fm"}, metric="privacy/audit_epsilon_lb",
        note="ALIBI's Laplace analysis is tight, PATE-FM's is not: at equal claimed label epsilon, ALIBI's canary "
             "audit should give a higher empirical lower bound on epsilon than PATE-FM's. The paper measured "
             "memorization of mislabeled canaries; the suite's audit bound is that measure turned into epsilon."),
)
