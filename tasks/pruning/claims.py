"""The claim of "Pruning Compact ConvNets for Efficient Inference" that the pruning task tests."""

from suite.claims import Claim

PAPER = "Ghosh, Prasad, Dai, Zhang, Wu, Cormode, Vajda (2023), Pruning Compact ConvNets for Efficient Inference"

CLAIMS = (
    Claim(
        "pruned_g_beats_b", paper=PAPER, quote=True, source="abstract",
        statement="The resulting family of pruned models can consistently obtain better performance than existing "
                  "FBNetV3 models at the same level of computation.",
        a={"method": "magnitude", "model": "fbnetv3_g", "target": "fbnetv3_b", "schedule": "one_shot",
           "global_pruning": False},
        b={"method": "unpruned", "model": "fbnetv3_b"}, metric="utility/accuracy",
        note="FBNetV3-g trained with the full budget, pruned to b's MACs (the task's default recipe: group-L2 "
             "magnitude, one shot, per layer: the grid's global-pruning cell of seed 0 is another configuration) and fine-tuned for finetune_epochs, against b trained directly "
             "with the full budget, paired by seed; no margin. The pruning keys (target, schedule, "
             "finetune_epochs, global_pruning) are set on the pruned side only."),
)
