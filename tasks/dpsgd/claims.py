"""The Opacus paper's claims that the dpsgd task tests (see suite/claims.py for how they are judged).

Chosen before any verdict was seen. Neither claim is one sentence of the Opacus paper, so both
are paraphrases (``quote=False``) with their source named.
"""

from suite.claims import Claim

OPACUS = "Yousefpour et al. (2021), Opacus: User-Friendly Differential Privacy Library in PyTorch"

CLAIMS = (
    Claim(
        "accuracy_rises_with_epsilon", paper=OPACUS, quote=False,
        statement="DP-SGD trades accuracy for privacy: a model trained with a larger privacy budget epsilon "
                  "is more accurate (here epsilon 8 against epsilon 1, everything else equal).",
        a={"method": "dpsgd", "epsilon": 8.0}, b={"method": "dpsgd", "epsilon": 1.0}, metric="utility/accuracy",
        source="the privacy-utility trade-off of DP-SGD that Opacus benchmarks",
        note="No margin: any gain counts. The two ends of the quick grid's budgets are compared."),
    Claim(
        "hooks_faster_than_functorch", paper=OPACUS, quote=False,
        statement="Opacus' hooks compute per-sample gradients in less time than functorch (vmap over grad).",
        a={"grad_sample_mode": "hooks"}, b={"grad_sample_mode": "functorch"}, metric="compute/train_s",
        effect="ratio", direction="lower",
        source="Opacus grad_sample README benchmarks (2022): on CPU an epoch of the CIFAR-10 example takes "
               "1.5x the hooks' time with functorch",
        note="Ratio of training wall times, same seed and config; wall time on a shared machine is noisy."),
    Claim(
        "ghost_faster_than_functorch", paper=OPACUS, quote=False,
        statement="Ghost clipping, which never materializes per-sample gradients, trains in less time than "
                  "per-sample gradients through functorch.",
        a={"grad_sample_mode": "ghost"}, b={"grad_sample_mode": "functorch"}, metric="compute/train_s",
        effect="ratio", direction="lower",
        source="the suite's brief (issue 16); Opacus' ghost clipping post (PyTorch blog, Aug 2024) mainly "
               "reports memory savings, so this is a paraphrase of the brief, not of a measured claim",
        note="Ratio of training wall times, same seed and config; wall time on a shared machine is noisy."),
)
