"""Evaluation metrics, one module per task.

`semantic` scores class-list segmentation from a streaming confusion matrix. Referring
segmentation (per-sample mIoU, cumulative oIoU, Pr@0.5..0.9) belongs in a sibling module
`referring`, so each task keeps its own accumulator and result record.
"""

from .semantic import NO_PREDICTION, ConfusionMatrix, SemanticScores

__all__ = ["NO_PREDICTION", "ConfusionMatrix", "SemanticScores"]
