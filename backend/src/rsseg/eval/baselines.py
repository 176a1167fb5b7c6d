"""Simple baselines a trained model must beat: "everything is the class" and a colour threshold.

The threshold is fitted on training pixels only: for each band and direction, the cut (a percentile
of that band) whose mask has the best IoU with the class; evaluation then applies it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CUTS = np.linspace(1, 99, 99)  # candidate cuts: percentiles of each band


def binary_iou(prediction: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> float:
    """IoU of the class over the valid pixels (NaN when neither has a pixel there)."""
    p, t = prediction[valid], truth[valid]
    union = np.count_nonzero(p | t)
    return float(np.count_nonzero(p & t) / union) if union else float("nan")


@dataclass(frozen=True)
class Threshold:
    band: int  # index into the image's bands
    cut: float
    above: bool  # the class is the pixels at or above the cut (else below)
    train_iou: float

    def apply(self, image: np.ndarray) -> np.ndarray:
        values = image[self.band]
        return values >= self.cut if self.above else values < self.cut


def fit_threshold(image: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> Threshold:
    """The single-band threshold with the best IoU of `truth` on the valid pixels of `image` [C, H, W]."""
    best = Threshold(0, float("inf"), True, -1.0)
    t = truth[valid]
    for band in range(image.shape[0]):
        values = image[band][valid].astype(np.float64)
        for cut in np.unique(np.percentile(values, CUTS)):
            for above in (True, False):
                p = values >= cut if above else values < cut
                union = np.count_nonzero(p | t)
                iou = np.count_nonzero(p & t) / union if union else 0.0
                if iou > best.train_iou:
                    best = Threshold(band, float(cut), above, float(iou))
    return best


def everything_iou(truth: np.ndarray, valid: np.ndarray) -> float:
    """IoU of the all-class mask: the class's share of the valid pixels."""
    return binary_iou(np.ones_like(truth, dtype=bool), truth, valid)
