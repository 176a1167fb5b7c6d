"""The trainable parts of RFM-Seg: connectors that add CLIP's features to the frozen host's encoder features.

Defined by the host's channels per scale (`dim`) and the other branch's (`other`), so any host whose encoder
gives four feature maps can take them. Each connector's last layers start at zero, so at initialisation it is
the identity and RFM-Seg segments exactly as its host does; training moves away from there.

    A(x, y)        SepConvBN_k(BN(x) + BN(y)): a depthwise k x k conv (k even: one pixel of reflection padding,
                   as GeoSeg's projection), BN, a pointwise conv; y is first brought to x's channels (1x1 conv,
                   only when they differ) and size
    V connector    z = x + A(x, y), then z + Conv1x1(BN(z))
    VL connector   z = x + 0.5 A(x, clip4) + 0.5 A(x, VL-map), then z + MLP(BN(z)) (1x1 convs, ReLU6)
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..unetformer.model import pad, separable_conv_bn


class Fuse(nn.Module):
    """A(x, y); its output is zero at initialisation."""

    def __init__(self, dim: int, other: int, kernel: int) -> None:
        super().__init__()
        self.norm_x = nn.BatchNorm2d(dim)
        self.norm_y = nn.BatchNorm2d(other)
        self.proj_y = nn.Conv2d(other, dim, 1, bias=False) if other != dim else nn.Identity()
        self.conv = separable_conv_bn(dim, dim, kernel)
        self.extra = (kernel - 1) % 2  # an even kernel with padding (k-1)//2 loses one pixel
        nn.init.zeros_(self.conv[-1].weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.proj_y(self.norm_y(y.to(x.dtype)))
        if y.shape[-2:] != x.shape[-2:]:
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        z = self.norm_x(x) + y
        if self.extra:
            z = pad(z, (0, self.extra, 0, self.extra))
        return self.conv(z)[:, :, :h, :w]


def _zero_last(layer: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class VConnector(nn.Module):
    def __init__(self, dim: int, other: int, kernel: int = 8) -> None:
        super().__init__()
        self.fuse = Fuse(dim, other, kernel)
        self.norm = nn.BatchNorm2d(dim)
        self.mix = _zero_last(nn.Conv2d(dim, dim, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = x + self.fuse(x, y)
        return z + self.mix(self.norm(z))


class VLConnector(nn.Module):
    def __init__(self, dim: int, clip: int, vl: int, kernel: int = 8, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.fuse_clip = Fuse(dim, clip, kernel)
        self.fuse_vl = Fuse(dim, vl, kernel)
        self.norm = nn.BatchNorm2d(dim)
        hidden = dim * mlp_ratio
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.ReLU6(), _zero_last(nn.Conv2d(hidden, dim, 1)))

    def forward(self, x: torch.Tensor, clip: torch.Tensor, vl: torch.Tensor) -> torch.Tensor:
        z = x + 0.5 * self.fuse_clip(x, clip) + 0.5 * self.fuse_vl(x, vl)
        return z + self.mlp(self.norm(z))


class Connectors(nn.Module):
    """Every trainable part, for a host with `host_channels` (1/4 .. 1/32) and CLIP V features with
    `clip_channels`: V connectors at 1/4, 1/8, 1/16; the class embedding of the VL-map and the VL connector at
    1/32 (which also takes CLIP's 1/32 feature)."""

    def __init__(self, host_channels: Sequence[int], clip_channels: Sequence[int], num_classes: int, kernel: int = 8,
                 mlp_ratio: int = 4) -> None:
        super().__init__()
        self.v = nn.ModuleList(VConnector(d, c, kernel) for d, c in zip(host_channels[:3], clip_channels[:3]))
        self.vl_embed = nn.Conv2d(num_classes, host_channels[3], 1, bias=False)
        self.vl = VLConnector(host_channels[3], clip_channels[3], host_channels[3], kernel, mlp_ratio)

    def forward(self, res: Sequence[torch.Tensor], clip: Sequence[torch.Tensor], classes: torch.Tensor
                ) -> list[torch.Tensor]:
        """Host features res1..4, CLIP features (stem, inner2..4) and the VL-map's class map [B, K, h, w] at 1/32
        -> the connected res1..4."""
        out = [conn(r, c) for conn, r, c in zip(self.v, res[:3], clip[:3])]
        vl = F.normalize(self.vl_embed(classes.to(res[3].dtype)), dim=1)
        return out + [self.vl(res[3], clip[3], vl)]
