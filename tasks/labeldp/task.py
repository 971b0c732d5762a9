"""Label differential privacy: randomized response, RR-with-prior, ALIBI and PATE-FM.

Reproduces at small scale "Antipodes of Label Differential Privacy: PATE and ALIBI"
(Malek, Mironov, Prasad, Shilov, Tramer, NeurIPS 2021). Only the labels are private; the
features are public. Every private run reports the label-level epsilon of its mechanism and
a one-run canary audit (mislabels, each planted with probability 1/2) with the epsilon lower
bound it implies. RR and ALIBI are pure epsilon-label-DP; PATE-FM is (epsilon, delta) by
PATE's data-independent RDP bound over a number of queries fixed in advance.
"""

from __future__ import annotations

from suite.schema import Metric
from suite.task import RunContext, Task, register_task
from tasks.labeldp.claims import CLAIMS
from tasks.labeldp.config import METHODS, LabelDPConfig


@register_task("labeldp")
class LabelDPTask(Task):
    description = "label-DP training: RR, RR-with-prior, ALIBI, PATE-FM vs non-private; accuracy vs label epsilon"
    # 3: one config per method, holding only the keys that method reads (other hashes than version 2).
    version = "3"
    Config = LabelDPConfig
    method_registry = METHODS  # tasks/labeldp/methods/: one module per method, its keys and its training step
    # Imported once by a sweep's fork server, so that no cell pays for them again. torch._dynamo
    # (sympy, triton) is what the first optimizer step would import: about 2 s of every cell.
    preload = ("tasks.labeldp.train", "tasks.labeldp.pate_fm", "torch._dynamo", "scipy.stats", "sklearn.datasets", "sklearn.semi_supervised",
               "sklearn.model_selection", "opacus.accountants", "dp_accounting.pld.pld_privacy_accountant")
    notes = (
        "PATE-FM's privacy/epsilon is the data-independent RDP bound (a composition of Gaussian mechanisms) "
        "over a number of queries fixed from the config before any vote is seen; privacy/epsilon_data_dependent "
        "is the data-dependent bound of the same answers, not released through smooth sensitivity, and never ranked.",
        "PATE-FM's threshold and noise scales follow Papernot et al. 2018's MNIST recipe scaled to 50 teachers "
        "(T, sigma1, sigma2 = 0.8, 0.6, 0.16 x teachers), chosen without the private votes; the teacher count and "
        "the label-spreading learners were chosen while developing on these digits, which is not accounted for.",
        "At label epsilon 2 and below, the quick tier's data-independent budget buys PATE-FM a handful of queries "
        "or none (privacy/queries_asked): too few answers to train a student. The cells are reported as they are.",
        "The audit is the one-run bound of Steinke, Nasr and Jagielski 2023: a 95% lower bound on epsilon; "
        "on the quick tier it catches gross bugs, not subtle ones.",
    )
    pareto = (("privacy/epsilon", "utility/accuracy"),)
    claims = CLAIMS  # the paper's claims, judged by `suite claims` (tasks/labeldp/claims.py)
    metrics = {
        "utility/accuracy": Metric("higher", "fraction", "test accuracy of the released model"),
        "utility/loss": Metric("lower", "nats", "test cross-entropy of the released model"),
        "utility/training_label_accuracy": Metric("higher", "fraction",
                                                  "mean probability the training targets put on the true label"),
        "privacy/epsilon": Metric("lower", "epsilon", "label-level epsilon of the mechanism that ran (pate_fm: "
                                  "data-independent RDP bound)"),
        "privacy/delta": Metric("none", "delta", "delta of pate_fm's (eps, delta) guarantee"),
        "privacy/epsilon_rdp": Metric("lower", "epsilon", "pate_fm: the same queries under Opacus' RDP accountant"),
        "privacy/epsilon_prv": Metric("lower", "epsilon", "pate_fm: the same queries under Opacus' PRV accountant"),
        "privacy/epsilon_pld": Metric("lower", "epsilon", "pate_fm: the same queries under dp-accounting's PLD"),
        "privacy/epsilon_data_dependent": Metric("none", "epsilon", "pate_fm: data-dependent RDP bound of the same "
                                                 "answers; a function of the private votes, never ranked"),
        "privacy/rr_flip_probability": Metric("none", "probability", "rr: P[label replaced] of k-ary RR"),
        "privacy/rr_prior_mean_k": Metric("none", "classes", "rr_prior: mean size of the top-k answer set"),
        "privacy/laplace_scale": Metric("none", "b", "alibi: Laplace scale on each one-hot coordinate"),
        "privacy/sigma_threshold": Metric("none", "votes", "pate_fm: threshold test noise std (sigma1)"),
        "privacy/sigma_gnmax": Metric("none", "votes", "pate_fm: noisy argmax noise std (sigma2)"),
        "privacy/threshold": Metric("none", "votes", "pate_fm: threshold T"),
        "privacy/queries_asked": Metric("none", "queries", "pate_fm: public examples submitted to the teachers "
                                        "(fixed by the config before any vote)"),
        "privacy/queries_answered": Metric("none", "queries", "pate_fm: queries that passed the threshold"),
        "privacy/audit_epsilon_lb": Metric("none", "epsilon",
                                           "one-run audit: epsilon lower bound at 95% confidence (Steinke et al. 2023)"),
        "privacy/audit_canaries": Metric("none", "count", "one-run audit: canaries, each mislabeled with probability 1/2"),
        "privacy/audit_guesses": Metric("none", "count", "one-run audit: guesses made (the rest abstain)"),
        "privacy/audit_correct": Metric("none", "count", "one-run audit: correct guesses"),
        "privacy/canary_planted_rate": Metric("lower", "fraction", "mislabeled canaries predicted as their wrong label"),
        "privacy/canary_control_rate": Metric("none", "fraction", "canaries left unchanged predicted as the wrong label"),
        "utility/teacher_accuracy": Metric("higher", "fraction", "pate_fm: mean test accuracy of one teacher"),
        "utility/answer_accuracy": Metric("higher", "fraction", "pate_fm: answered queries whose label is right"),
        "compute/params": Metric("lower", "count", "parameters of the released model"),
        "compute/model_bytes": Metric("lower", "bytes", "parameters and buffers of the released model"),
        "compute/teachers_cached": Metric("none", "flag",
                                          "pate_fm: 1 when the teacher votes were read from the on-disk cache "
                                          "(this run's timings then exclude training the teachers)"),
    }

    def run(self, config: LabelDPConfig, ctx: RunContext) -> dict[str, float]:
        """The split, the config's method's training step, the evaluation and the audit."""
        from tasks.labeldp.train import train_and_evaluate

        return train_and_evaluate(config, self.method_of(config), ctx)
