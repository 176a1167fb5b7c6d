"""RFM-Seg's CLIP branch for a RemoteCLIP ResNet (open_clip's ModifiedResNet, e.g. RN50): multi-scale features
and the window embeddings the VL-map compares with text.

V features, at the strides of a ResNet-18 host: the stem (width at 1/4) and the inner (bottleneck) activation
of the last block of layer2, layer3 and layer4 (2, 4 and 8 x width at 1/8, 1/16, 1/32: 128, 256, 512 for
RN50, ResNet-18's widths). The public code reads the same tensors by running the blocks by hand.

Window embeddings: every `window` x `window` window (stride 1) of layer4's output pooled by CLIP's own
attention pool, as if each window were a 224-px image, computed for all windows at once (the public code loops over
windows and images in Python).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WINDOW_ELEMENTS = 1 << 26  # keys (and values) held at once: windows x (1 + window²) x channels


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
    + 1; a map smaller than a window is first padded by replication to one window): what CLIP's attention pool
    gives for each window, exactly, computed without pooling each window on its own.

    The pool's query is the window's mean token plus a position; its keys and values are the tokens plus
    theirs. Projections are linear, so every token is projected once (and the window means are means of the
    projections), and only the mean token's query is attended with (the pool returns that output only).
    """
    pool = visual.attnpool
    h, w = layer4.shape[-2:]
    if h < window or w < window:
        layer4 = F.pad(layer4, (0, max(0, window - w), 0, max(0, window - h)), mode="replicate")
    tokens = layer4.permute(0, 2, 3, 1)  # B, h, w, C
    pos = pool.positional_embedding.to(tokens.dtype)  # 1 + window², C: the mean token's, then row-major
    projected = [(tokens @ layer.weight.T, pos @ layer.weight.T + layer.bias)
                 for layer in (pool.q_proj, pool.k_proj, pool.v_proj)]
    rows = max(1, WINDOW_ELEMENTS // max(1, (tokens.shape[2] - window + 1) * (window * window + 1) * tokens.shape[3]
                                         * tokens.shape[0]))
    out = [_pool_rows(pool, projected, window, top, rows) for top in range(0, tokens.shape[1] - window + 1, rows)]
    return F.normalize(torch.cat(out, dim=1).float(), dim=-1).permute(0, 3, 1, 2)


def _pool_rows(pool: nn.Module, projected: list, window: int, top: int, rows: int) -> torch.Tensor:
    """The pooled windows whose top row is in top .. top + rows - 1: [B, rows, w', D]."""
    (qx, qp), (kx, kp), (vx, vp) = [(x[:, top:top + rows + window - 1], p) for x, p in projected]

    def mean(x: torch.Tensor) -> torch.Tensor:  # B, y, x, C -> the window means B, y', x', C
        return F.avg_pool2d(x.permute(0, 3, 1, 2), window, stride=1).permute(0, 2, 3, 1)

    def sequence(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:  # B, y', x', 1 + window², C
        inside = x.unfold(1, window, 1).unfold(2, window, 1).flatten(-2).transpose(-1, -2)
        return torch.cat([(mean(x) + p[0]).unsqueeze(-2), inside + p[1:]], dim=-2)

    q, k, v = mean(qx) + qp[0], sequence(kx, kp), sequence(vx, vp)
    heads = pool.num_heads
    q = q.unflatten(-1, (heads, -1))
    k, v = k.unflatten(-1, (heads, -1)), v.unflatten(-1, (heads, -1))
    attn = (torch.einsum("byxhd,byxthd->byxht", q, k) * q.shape[-1] ** -0.5).softmax(dim=-1)
    return pool.c_proj(torch.einsum("byxht,byxthd->byxhd", attn, v).flatten(-2))
