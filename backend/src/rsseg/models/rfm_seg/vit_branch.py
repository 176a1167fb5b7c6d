"""RFM-Seg's CLIP branch for a ViT RemoteCLIP (open_clip VisionTransformer, e.g. ViT-B/32), the option beside
the ResNet one (remoteclip.py).

A ViT has one grid (1/patch) and one width, so its V features are the token maps after blocks n/4, n/2, 3n/4
and n-1 (of n), all at 1/patch; the connectors bring them to the host's widths (1x1 conv) and sizes
(bilinear). A ViT has no attention pool to apply to a window, so a window's embedding is the mean of its
dense patch embeddings (CLIP's last block as self-self attention, models/clip/dense.py, in the joint space):
7 x 7 patches of ViT-B/32 are the 224-px view RN50's attention pool sees.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..clip.dense import embed_patches, self_self_attention


def taps(n_blocks: int) -> list[int]:
    """The blocks whose outputs are V features: after n/4, n/2, 3n/4 and n-1 blocks (at least one)."""
    return [min(max(1, round(n_blocks * k / 4)), n_blocks - 1) or 1 for k in (1, 2, 3, 4)]


def feature_channels(visual: nn.Module) -> tuple[int, int, int, int]:
    width = visual.conv1.out_channels
    return width, width, width, width


def stride(visual: nn.Module) -> int:
    return int(visual.conv1.kernel_size[0])


def features(visual: nn.Module, image: torch.Tensor, window: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """CLIP-normalised RGB [B, 3, H, W] -> (four V features [B, width, H/p, W/p], L2-normalised window
    embeddings [B, E, h', w'])."""
    x, (gh, gw) = embed_patches(visual, image)
    b, width = x.shape[0], x.shape[-1]
    blocks = visual.transformer.resblocks
    wanted, maps = taps(len(blocks)), {}
    sequence_first = not getattr(visual.transformer, "batch_first", True)
    for i, block in enumerate(blocks[:-1], start=1):
        x = block(x.transpose(0, 1)).transpose(0, 1) if sequence_first else block(x)
        if i in wanted:
            maps[i] = x[:, 1:].transpose(1, 2).reshape(b, width, gh, gw)
    dense = visual.ln_post(self_self_attention(blocks[-1], x)) @ visual.proj
    dense = dense[:, 1:].transpose(1, 2).reshape(b, -1, gh, gw)
    if gh < window or gw < window:
        dense = F.pad(dense, (0, max(0, window - gw), 0, max(0, window - gh)), mode="replicate")
    windows = F.avg_pool2d(dense.float(), window, stride=1)
    return [maps[i] for i in wanted], F.normalize(windows, dim=1)
