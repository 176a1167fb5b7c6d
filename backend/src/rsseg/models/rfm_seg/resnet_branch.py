"""RFM-Seg's CLIP branch for a RemoteCLIP ResNet (open_clip's ModifiedResNet, e.g. RN50): multi-scale features
and the window embeddings the VL-map compares with text.

V features, at the strides of a ResNet-18 host: the stem (width at 1/4) and the inner (bottleneck) activation
of the last block of layer2, layer3 and layer4 (2, 4 and 8 x width at 1/8, 1/16, 1/32: 128, 256, 512 for
RN50, ResNet-18's widths). The public code reads the same tensors by running the blocks by hand.

Window embeddings: every `window` x `window` window (stride 1) of layer4's output pooled by CLIP's own
attention pool, as if each window were a 224-px image, in one batched pass (the public code loops over
windows and images in Python).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WINDOW_CHUNK = 512  # windows pooled per attention-pool call (bounds the memory of large tiles)


def _bottleneck(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """open_clip's Bottleneck.forward, also returning the activation after its 3x3 conv (and avgpool)."""
    inner = block.avgpool(block.act2(block.bn2(block.conv2(block.act1(block.bn1(block.conv1(x)))))))
    out = block.bn3(block.conv3(inner))
    identity = x if block.downsample is None else block.downsample(x)
    return block.act3(out + identity), inner


def _layer(layer: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for block in layer[:-1]:
        x = block(x)
    return _bottleneck(layer[-1], x)


def visual_features(visual: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(stem, inner2, inner3, inner4, layer4 output) of CLIP-normalised RGB `image` [B, 3, H, W]."""
    stem = visual.stem(image)
    x = visual.layer1(stem)
    x, c2 = _layer(visual.layer2, x)
    x, c3 = _layer(visual.layer3, x)
    x, c4 = _layer(visual.layer4, x)
    return stem, c2, c3, c4, x


def features(visual: nn.Module, image: torch.Tensor, window: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """CLIP-normalised RGB [B, 3, H, W] -> (four V features, window embeddings [B, D, h', w'])."""
    stem, c2, c3, c4, layer4 = visual_features(visual, image)
    return [stem, c2, c3, c4], window_embeddings(visual, layer4, window)


def stride(visual: nn.Module) -> int:
    """The stride of the grid the windows slide on (layer4: 1/32)."""
    return 32


def feature_channels(visual: nn.Module) -> tuple[int, int, int, int]:
    """The channels of the four V features."""
    return (visual.layer1[0].conv1.in_channels, visual.layer2[-1].conv2.out_channels,
            visual.layer3[-1].conv2.out_channels, visual.layer4[-1].conv2.out_channels)


def window_embeddings(visual: nn.Module, layer4: torch.Tensor, window: int) -> torch.Tensor:
    """[B, C, h, w] -> L2-normalised [B, D, h', w'] embeddings of the windows at each offset (h' = h - window
    + 1; a map smaller than a window is first padded by replication to one window)."""
    b, c, h, w = layer4.shape
    layer4 = F.pad(layer4, (0, max(0, window - w), 0, max(0, window - h)), mode="replicate") \
        if h < window or w < window else layer4
    patches = layer4.unfold(2, window, 1).unfold(3, window, 1)  # B, C, h', w', win, win
    hh, ww = patches.shape[2:4]
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(b * hh * ww, c, window, window)
    pooled = torch.cat([visual.attnpool(chunk) for chunk in patches.split(WINDOW_CHUNK)])
    return F.normalize(pooled.float(), dim=-1).reshape(b, hh, ww, -1).permute(0, 3, 1, 2)
