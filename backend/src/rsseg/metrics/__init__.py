"""Evaluation metrics, one module per task.

`semantic` scores class-list segmentation from a streaming confusion matrix; `referring` scores
referring segmentation (per-sample mIoU, cumulative oIoU, Pr@0.5..0.9). Each task keeps its own
accumulator and result record.
"""

from .referring import PR_THRESHOLDS, ReferringAccumulator, ReferringScores, intersection_union
from .semantic import NO_PREDICTION, ConfusionMatrix, SemanticScores

__all__ = ["NO_PREDICTION", "ConfusionMatrix", "SemanticScores", "PR_THRESHOLDS", "ReferringAccumulator",
           "ReferringScores", "intersection_union"]
