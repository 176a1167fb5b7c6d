"""Chip augmentations for semantic training: flips, rot90, scale, colour jitter, band dropout.

Image and label move together (the label by nearest neighbour; pixels a zoom-out leaves empty are
ignore_index). Random draws come from torch's global generator, which checkpoints save and resume
restores, so a resumed run augments exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    flip: bool = True
    rot90: bool = True
    scale: tuple[float, float] = (0.75, 1.25)  # zoom range; (1, 1) turns it off
    jitter: float = 0.1  # brightness and contrast change per band, as a fraction
    band_dropout: float = 0.1  # chance of zeroing one band (multi-band chips only)


def _uniform(low: float, high: float) -> float:
    return float(low + (high - low) * torch.rand(()))


def _rescale(image: torch.Tensor, label: torch.Tensor, factor: float, ignore: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zoom by `factor` about a random centre, keeping the chip size (crop when zooming in, pad with
    ignore_index when zooming out)."""
    c, h, w = image.shape
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    label = F.interpolate(label[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].to(label.dtype)
    out_image = torch.zeros((c, h, w), dtype=image.dtype)
    out_label = torch.full((h, w), ignore, dtype=label.dtype)
    dy = int(torch.randint(0, abs(nh - h) + 1, ()))
    dx = int(torch.randint(0, abs(nw - w) + 1, ()))
    if nh >= h:
        src_y, dst_y = slice(dy, dy + h), slice(0, h)
    else:
        src_y, dst_y = slice(0, nh), slice(dy, dy + nh)
    if nw >= w:
        src_x, dst_x = slice(dx, dx + w), slice(0, w)
    else:
        src_x, dst_x = slice(0, nw), slice(dx, dx + nw)
    out_image[:, dst_y, dst_x] = image[:, src_y, src_x]
    out_label[dst_y, dst_x] = label[src_y, src_x]
    return out_image, out_label


def augment(image: np.ndarray, label: np.ndarray, how: Augment, ignore: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented (image [C, H, W] float32 in [0, 1], label [H, W] int64) pair as tensors."""
    x = torch.from_numpy(np.ascontiguousarray(image, np.float32))
    y = torch.from_numpy(np.ascontiguousarray(label)).long()
    if how.flip and torch.rand(()) < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    if how.flip and torch.rand(()) < 0.5:
        x, y = x.flip(-2), y.flip(-2)
    if how.rot90:
        k = int(torch.randint(0, 4, ()))
        if k:
            x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
    low, high = how.scale
    if high > low and torch.rand(()) < 0.5:
        x, y = _rescale(x, y, _uniform(low, high), ignore)
    if how.jitter > 0:
        gain = 1 + how.jitter * (2 * torch.rand(x.shape[0], 1, 1) - 1)
        shift = how.jitter * (2 * torch.rand(x.shape[0], 1, 1) - 1)
        x = ((x - 0.5) * gain + 0.5 + shift).clamp(0.0, 1.0)
    if how.band_dropout > 0 and x.shape[0] > 1 and torch.rand(()) < how.band_dropout:
        x[int(torch.randint(0, x.shape[0], ()))] = 0.0
    return x.contiguous(), y.contiguous()
