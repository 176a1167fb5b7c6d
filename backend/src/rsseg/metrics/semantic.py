"""Semantic-segmentation scores from a streaming confusion matrix.

The matrix has one row per labelled class and one column per predicted class plus a last
"no prediction" column: pixels a model left unlabelled or nodata are wrong for their label's
class (a false negative) but are nobody's false positive. Pixels whose label is the ignore index
never enter the matrix.

Per class c, with TP = M[c, c], FN = row c minus TP, FP = column c minus TP:
    IoU = TP / (TP + FP + FN),  F1 = 2 TP / (2 TP + FP + FN)  (= Dice)
Both are undefined (NaN) for a class absent from the labels and the predictions; the means
(mIoU, mean F1) skip undefined classes, as mmsegmentation's `nanmean` does. A class that is only
predicted scores 0 and counts. OA is the share of labelled pixels predicted correctly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

NO_PREDICTION = -1  # any prediction outside 0..K-1 lands in the "no prediction" column


class ConfusionMatrix:
    """Counts of (label class, predicted class) pixels, accumulated image by image."""

    def __init__(self, num_classes: int, ignore_index: Optional[int] = 255):
        if num_classes < 1:
            raise ValueError(f"need at least one class, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = np.zeros((num_classes, num_classes + 1), np.int64)

    def update(self, prediction: np.ndarray, label: np.ndarray) -> None:
        """Add one image: class indices 0..K-1 in both; other predictions count as no prediction."""
        prediction, label = np.asarray(prediction), np.asarray(label)
        if prediction.shape != label.shape:
            raise ValueError(f"prediction shape {prediction.shape} differs from label shape {label.shape}")
        label = label.ravel().astype(np.int64)
        prediction = prediction.ravel().astype(np.int64)
        if self.ignore_index is not None:
            keep = label != self.ignore_index
            label, prediction = label[keep], prediction[keep]
        if label.size and (label.min() < 0 or label.max() >= self.num_classes):
            bad = np.unique(label[(label < 0) | (label >= self.num_classes)])
            raise ValueError(f"label values {bad[:10].tolist()} are neither classes 0..{self.num_classes - 1} "
                             f"nor the ignore index {self.ignore_index}")
        k = self.num_classes
        prediction = np.where((prediction >= 0) & (prediction < k), prediction, k)
        self.counts += np.bincount(label * (k + 1) + prediction, minlength=k * (k + 1)).reshape(k, k + 1)

    def merge(self, other: "ConfusionMatrix") -> None:
        if other.counts.shape != self.counts.shape:
            raise ValueError("confusion matrices of different class counts cannot be merged")
        self.counts += other.counts

    def scores(self, class_names: Optional[Sequence[str]] = None) -> "SemanticScores":
        return SemanticScores.from_counts(self.counts, class_names)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


def _json(value: float) -> Optional[float]:
    return None if math.isnan(value) else value


@dataclass
class SemanticScores:
    """Per-class IoU and F1 (NaN where undefined), their means, and overall accuracy; fractions 0..1."""

    class_names: list[str]
    iou: list[float]
    f1: list[float]
    label_pixels: list[int]  # labelled (non-ignored) pixels of each class
    predicted_pixels: list[int]  # labelled pixels predicted as each class
    miou: float
    mean_f1: float
    oa: float
    pixels: int  # labelled pixels scored
    unpredicted: int  # labelled pixels the model left unlabelled or nodata
    confusion: list[list[int]] = field(repr=False, default_factory=list)

    @classmethod
    def from_counts(cls, counts: np.ndarray, class_names: Optional[Sequence[str]] = None) -> "SemanticScores":
        k = counts.shape[0]
        names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
        if len(names) != k:
            raise ValueError(f"{len(names)} class names for {k} classes")
        tp = np.diag(counts[:, :k]).astype(np.float64)
        label = counts.sum(axis=1).astype(np.float64)  # TP + FN
        predicted = counts[:, :k].sum(axis=0).astype(np.float64)  # TP + FP
        iou = _ratio(tp, label + predicted - tp)
        f1 = _ratio(2 * tp, label + predicted)
        total = int(counts.sum())
        return cls(names, iou.tolist(), f1.tolist(), label.astype(np.int64).tolist(),
                   predicted.astype(np.int64).tolist(), _nanmean(iou), _nanmean(f1),
                   float(tp.sum() / total) if total else math.nan, total, int(counts[:, k].sum()),
                   counts.tolist())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN (undefined) becomes null."""
        per_class = [{"name": n, "iou": _json(i), "f1": _json(f), "label_pixels": lp, "predicted_pixels": pp}
                     for n, i, f, lp, pp in zip(self.class_names, self.iou, self.f1, self.label_pixels,
                                                self.predicted_pixels)]
        return {"miou": _json(self.miou), "mean_f1": _json(self.mean_f1), "oa": _json(self.oa),
                "pixels": self.pixels, "unpredicted": self.unpredicted, "classes": per_class,
                "confusion": self.confusion}

    def format_table(self) -> str:
        """Per-class IoU and F1 in percent, then the means; '-' for an undefined score."""
        def pct(value: float) -> str:
            return f"{'-':>7}" if math.isnan(value) else f"{100 * value:7.2f}"

        width = max([len("class"), *(len(n) for n in self.class_names)])
        lines = [f"{'class':<{width}} {'IoU':>7} {'F1':>7} {'label px':>12}"]
        for name, iou, f1, pixels in zip(self.class_names, self.iou, self.f1, self.label_pixels):
            lines.append(f"{name:<{width}} {pct(iou)} {pct(f1)} {pixels:12d}")
        lines.append(f"{'mean':<{width}} {pct(self.miou)} {pct(self.mean_f1)} {self.pixels:12d}")
        lines.append(f"mIoU {pct(self.miou).strip()}  mean F1 {pct(self.mean_f1).strip()}  "
                     f"OA {pct(self.oa).strip()}  ({self.unpredicted} labelled pixels left unpredicted)")
        return "\n".join(lines)
