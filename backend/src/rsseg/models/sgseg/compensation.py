"""Generalisation compensation: keep the tuned image tower's features close to the frozen teacher's.

PLOP / PODNet-style pooled output distillation (POD). Matching features element-wise would forbid the adaptation
fine-tuning is for; POD compares spatial statistics instead: at each scale s the ReLU'd map is cut into an s x s
grid of regions, and each region is summarised by its mean along the height (a [C, w_r] profile) and along the
width ([C, h_r]). Each profile is L2-normalised, so the mean and the sum of the brief's "average pooling, then sums
along height and width" give the same vector (they differ by a constant factor the normalisation removes); the mean
is used. The loss is the SmoothL1 distance between student and (detached) teacher embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _bounds(size: int, parts: int, i: int) -> tuple[int, int]:
    """Region i of `parts` along an axis of `size`, as adaptive pooling cuts it: floor(i*n/s) to ceil((i+1)*n/s).
    A partition when `parts` divides `size`; otherwise neighbours share at most one row, and no region is empty."""
    return (i * size) // parts, -(-((i + 1) * size) // parts)


def pod(x: Tensor, scales: Sequence[int] = (1, 2, 4)) -> Tensor:
    """[B, C, H, W] -> [B, D]: per scale and region, the L2-normalised height-mean and width-mean profiles,
    concatenated (D = sum over scales of s^2 * C * (h_r + w_r))."""
    x = F.relu(x)
    b, _, h, w = x.shape
    parts = []
    for s in scales:
        for i in range(s):
            top, bottom = _bounds(h, s, i)
            for j in range(s):
                left, right = _bounds(w, s, j)
                region = x[:, :, top:bottom, left:right]
                parts.append(F.normalize(region.mean(dim=2).reshape(b, -1), dim=1))  # along height: [C, w_r]
                parts.append(F.normalize(region.mean(dim=3).reshape(b, -1), dim=1))  # along width: [C, h_r]
    return torch.cat(parts, dim=1)


def low_frequency(x: Tensor, kernel: int = 3) -> Tensor:
    """x + its box blur (kernel x kernel mean, stride 1, borders averaged over the pixels inside): the smooth
    component counts twice, fine detail once, so the distillation of inner (noisy, high-frequency) maps weighs the
    coarse layout the teacher generalises with rather than texture."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"low_frequency: kernel must be odd and positive, not {kernel}")
    return x + F.avg_pool2d(x, kernel, stride=1, padding=kernel // 2, count_include_pad=False)


def compensation_loss(student: Sequence[Tensor], teacher: Sequence[Tensor], scales: Sequence[int] = (1, 2, 4),
                      low_freq: bool = False) -> Tensor:
    """Mean over levels of SmoothL1(pod(student), pod(teacher)); the teacher is detached (gradients reach the
    student only). low_freq: both sides go through low_frequency first. Zero when the features are equal."""
    if len(student) != len(teacher) or not student:
        raise ValueError(f"compensation_loss: {len(student)} student levels for {len(teacher)} teacher levels")
    losses = []
    for s, t in zip(student, teacher):
        if s.shape != t.shape:
            raise ValueError(f"compensation_loss: student {tuple(s.shape)} and teacher {tuple(t.shape)} differ")
        t = t.detach().to(s.dtype)
        if low_freq:
            s, t = low_frequency(s), low_frequency(t)
        losses.append(F.smooth_l1_loss(pod(s, scales), pod(t, scales)))
    return torch.stack(losses).mean()
