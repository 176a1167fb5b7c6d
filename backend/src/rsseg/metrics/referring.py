"""Referring-segmentation scores: one predicted mask per (image, sentence) sample.

The field's definitions, as LAVT's and RMSIN's `test.py` compute them (RRSIS-D's published
numbers come from that code; RSRefSeg reports the same quantities):

    per sample  I = |P ∩ G|, U = |P ∪ G|, IoU = I / U
    mIoU (gIoU) = mean over samples of IoU
    oIoU (cIoU) = Σ I / Σ U over the whole split (large objects weigh more)
    Pr@X        = share of samples with IoU >= X, X in 0.5 .. 0.9

Pr@X uses `>=` as LAVT/RMSIN do (`seg_correct += (this_iou >= eval_seg_iou)`); RSRefSeg's
mmseg metric uses `>` (`per_image_iou > iou`): pass `strict=True` for that rule. The two differ
only for a sample whose IoU is exactly a threshold (e.g. 1/2).

Empty union (prediction and target both empty): IoU is 1 here (a correct "nothing" answer) and
the sample adds nothing to Σ I and Σ U. LAVT/RMSIN score it 0; benchmark targets are never empty,
so the choice matters only for custom data (`empty_iou=0.0` reproduces their rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import numpy as np

PR_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)


def intersection_union(prediction: np.ndarray, target: np.ndarray) -> tuple[int, int]:
    """Pixel counts |P ∩ G| and |P ∪ G| of two boolean masks of one shape."""
    prediction, target = np.asarray(prediction), np.asarray(target)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from target shape {target.shape}")
    prediction, target = prediction.astype(bool), target.astype(bool)
    return int(np.count_nonzero(prediction & target)), int(np.count_nonzero(prediction | target))


class ReferringAccumulator:
    """Streams samples in (`add`) and keeps per-sample IoUs plus the cumulative counts."""

    def __init__(self, thresholds: Iterable[float] = PR_THRESHOLDS, strict: bool = False,
                 empty_iou: float = 1.0):
        self.thresholds = tuple(float(t) for t in thresholds)
        self.strict = strict
        self.empty_iou = float(empty_iou)
        self.ious: list[float] = []
        self.intersection = 0
        self.union = 0
        self.empty = 0  # samples whose prediction and target were both empty

    def add(self, prediction: np.ndarray, target: np.ndarray) -> float:
        """Score one sample (boolean masks, or 0/1); returns its IoU."""
        inter, union = intersection_union(prediction, target)
        return self.add_counts(inter, union)

    def add_counts(self, intersection: int, union: int) -> float:
        """Score one sample from its counts (for callers that computed them on a device)."""
        if intersection < 0 or union < intersection:
            raise ValueError(f"invalid counts: intersection {intersection}, union {union}")
        if union == 0:
            iou = self.empty_iou
            self.empty += 1
        else:
            iou = intersection / union
        self.ious.append(iou)
        self.intersection += int(intersection)
        self.union += int(union)
        return iou

    def merge(self, other: "ReferringAccumulator") -> None:
        if (other.thresholds, other.strict, other.empty_iou) != (self.thresholds, self.strict, self.empty_iou):
            raise ValueError("accumulators with different thresholds or rules cannot be merged")
        self.ious.extend(other.ious)
        self.intersection += other.intersection
        self.union += other.union
        self.empty += other.empty

    def scores(self) -> "ReferringScores":
        ious = np.asarray(self.ious, np.float64)
        n = int(ious.size)
        precision = {}
        for t in self.thresholds:
            hits = (ious > t) if self.strict else (ious >= t)
            precision[t] = float(hits.sum() / n) if n else math.nan
        return ReferringScores(
            miou=float(ious.mean()) if n else math.nan,
            oiou=self.intersection / self.union if self.union else math.nan,
            precision=precision, samples=n, intersection=self.intersection, union=self.union,
            empty=self.empty, rule=">" if self.strict else ">=", ious=list(self.ious))


def _json(value: float) -> Optional[float]:
    return None if math.isnan(value) else value


@dataclass
class ReferringScores:
    """mIoU, oIoU and Pr@X as fractions 0..1 (NaN when there is nothing to score)."""

    miou: float
    oiou: float
    precision: dict[float, float]  # threshold -> share of samples at or over it
    samples: int
    intersection: int  # Σ I over the split
    union: int  # Σ U over the split
    empty: int  # samples with an empty union (scored with the accumulator's empty_iou)
    rule: str  # ">=" (LAVT/RMSIN) or ">" (RSRefSeg) for Pr@X
    ious: list[float] = field(repr=False, default_factory=list)

    @property
    def giou(self) -> float:
        return self.miou

    @property
    def ciou(self) -> float:
        return self.oiou

    def to_dict(self, per_sample: bool = False) -> dict[str, Any]:
        """JSON-ready; NaN becomes null. `pr@0.5` style keys keep the thresholds readable."""
        out: dict[str, Any] = {"miou": _json(self.miou), "oiou": _json(self.oiou)}
        out.update({f"pr@{t:g}": _json(p) for t, p in self.precision.items()})
        out.update({"samples": self.samples, "intersection": self.intersection, "union": self.union,
                    "empty": self.empty, "pr_rule": self.rule})
        if per_sample:
            out["ious"] = list(self.ious)
        return out

    def format_table(self) -> str:
        """One header row and one row of percentages, as papers print them."""
        def pct(value: float) -> str:
            return f"{'-':>7}" if math.isnan(value) else f"{100 * value:7.2f}"

        names = ["mIoU", "oIoU", *(f"Pr@{t:g}" for t in self.precision)]
        values = [self.miou, self.oiou, *self.precision.values()]
        header = " ".join(f"{n:>7}" for n in names)
        row = " ".join(pct(v) for v in values)
        return f"{header}\n{row}\n{self.samples} samples (Pr@X counts IoU {self.rule} X)"
