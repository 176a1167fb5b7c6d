"""Coarse class logits simulated from labels: what a perfect-but-coarse patch classifier (CLIP
ViT-B/16 on a 1/16 grid) would give, so refinement can be studied and tested without CLIP weights
(tools/refine_study.py, tests/backend/test_refine.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

FACTOR = 16  # ViT-B/16's patch size


def simulate_coarse(labels: torch.Tensor, num_classes: int, factor: int = FACTOR, alpha: float = 0.02,
                    noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Coarse logits [K,h,w] a perfect patch classifier would give: log of smoothed patch class shares,
    plus (noise > 0) a spatially correlated Gaussian field of that std, blurred over ~1 patch."""
    onehot = F.one_hot(labels, num_classes).permute(2, 0, 1).float()[None]
    shares = F.avg_pool2d(onehot, factor)[0]
    logits = torch.log((shares + alpha) / (1 + num_classes * alpha))
    if noise > 0:
        gen = torch.Generator().manual_seed(seed)
        field_ = torch.randn(1, num_classes, *logits.shape[-2:], generator=gen)
        x = torch.arange(-3, 4, dtype=torch.float32)
        g = torch.exp(-x ** 2 / 2)
        g = (g / g.sum())
        k2 = (g[:, None] * g[None, :])[None, None].expand(num_classes, 1, 7, 7)
        field_ = F.conv2d(F.pad(field_, (3, 3, 3, 3), mode="reflect"), k2, groups=num_classes)[0]
        logits = logits + noise * field_ / field_.std()
    return logits
