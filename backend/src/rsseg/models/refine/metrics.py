"""Scores for refined segmentations: per-class IoU and boundary F-score, in torch (CPU or GPU).

Why boundary F: IoU is dominated by region interiors, which upsampling does not change; what
refinement changes is where the edges are. The boundary F-score (Perazzi et al. 2016, DAVIS) is
the F1 of boundary pixels matched within a tolerance of `tol` px (a disk).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def intersection_union(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class (intersection, union) pixel counts of two label maps [..., H, W]: sum over tiles, then divide."""
    inter = torch.stack([((pred == c) & (target == c)).sum() for c in range(num_classes)])
    union = torch.stack([((pred == c) | (target == c)).sum() for c in range(num_classes)])
    return inter, union


def boundary(mask: torch.Tensor) -> torch.Tensor:
    """Pixels of a boolean mask [H,W] with a 4-neighbour outside it (the image border does not count)."""
    m = mask.float()[None, None]
    eroded = -F.max_pool2d(-F.pad(m, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return mask & (eroded[0, 0] < 0.5)


def _dilate(mask: torch.Tensor, tol: int) -> torch.Tensor:
    r = torch.arange(-tol, tol + 1, device=mask.device, dtype=torch.float32)
    disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= tol * tol + 1e-6).float()[None, None]
    return F.conv2d(mask.float()[None, None], disk, padding=tol)[0, 0] > 0


def boundary_counts(pred: torch.Tensor, target: torch.Tensor, tol: int = 2) -> torch.Tensor:
    """(matched predicted, predicted, matched true, true) boundary pixel counts of two masks [H,W]."""
    bp, bt = boundary(pred), boundary(target)
    return torch.stack([(bp & _dilate(bt, tol)).sum(), bp.sum(), (bt & _dilate(bp, tol)).sum(), bt.sum()])


def boundary_f(counts: torch.Tensor) -> float:
    """F-score from (summed) boundary_counts: harmonic mean of boundary precision and recall."""
    precision = float(counts[0]) / max(float(counts[1]), 1.0)
    recall = float(counts[2]) / max(float(counts[3]), 1.0)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def boundary_iou(pred: torch.Tensor, target: torch.Tensor, width: int = 2) -> float:
    """Boundary IoU (Cheng et al., CVPR 2021) of two masks [H,W]: IoU of the parts of each mask
    within `width` px of its own contour, so only the edges count."""
    def band(mask: torch.Tensor) -> torch.Tensor:
        return mask & _dilate(boundary(mask), width)

    bp, bt = band(pred), band(target)
    union = (bp | bt).sum()
    return float((bp & bt).sum()) / max(float(union), 1.0)
