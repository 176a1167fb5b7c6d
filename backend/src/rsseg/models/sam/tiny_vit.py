# --------------------------------------------------------
# TinyViT image encoder, the MobileSAM / LiteMedSAM variant.
#
# Ported from TinyViT (Copyright (c) 2022 Microsoft, MIT licence,
# https://github.com/microsoft/Cream/tree/main/TinyViT; itself adapted from LeViT and Swin) as
# modified by MobileSAM (Copyright (c) 2023 Chaoning Zhang et al., Apache-2.0,
# https://github.com/ChaoningZhang/MobileSAM) and LiteMedSAM (MedSAM, Apache-2.0).
# Changes here: the stride of the stem and of every patch merge are parameters (MobileSAM's
# hard-coded "stride 1 when out_dim is 320/448/576" becomes `merge_strides`), the output grid is
# computed instead of fixed at 64x64, and training-only machinery (drop path, gradient
# checkpointing, layer-wise lr decay, BN fusing) is left out. State-dict keys are unchanged, so
# MobileSAM and LiteMedSAM checkpoints load as they are.
# --------------------------------------------------------
"""TinyViT: a small conv + windowed-attention encoder that stands in for SAM's ViT.

Stage 0 is MBConv blocks, the later stages are windowed attention blocks with a depthwise conv
between attention and MLP; a SAM-style neck maps the last stage to `out_chans` channels.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Conv2dBN(nn.Sequential):
    """Conv without bias + BatchNorm (keys `c.*`, `bn.*`)."""

    def __init__(self, in_chans: int, out_chans: int, kernel: int = 1, stride: int = 1, pad: int = 0,
                 groups: int = 1, bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chans, out_chans, kernel, stride, pad, groups=groups, bias=False))
        bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.constant_(bn.bias, 0)
        self.add_module("bn", bn)


class PatchEmbed(nn.Module):
    """Stem: two conv-BN layers. Stride 4 (3x3 convs, MobileSAM at 1024²) or stride 1 (1x1 convs,
    LiteMedSAM at 256², which keeps a 64x64 embedding grid from a 256² input)."""

    def __init__(self, in_chans: int, embed_dim: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 4):
            raise ValueError(f"TinyViT stem stride must be 1 or 4, got {stride}")
        kernel, step, pad = (3, 2, 1) if stride == 4 else (1, 1, 0)
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2, kernel, step, pad),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim, kernel, step, pad),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, 3x3 depthwise, 1x1 project, residual."""

    def __init__(self, chans: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(chans * expand_ratio)
        self.conv1 = Conv2dBN(chans, hidden)
        self.act1 = nn.GELU()
        self.conv2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2dBN(hidden, chans, bn_weight_init=0.0)  # starts as identity
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Change width (and maybe halve the grid): 1x1, 3x3 depthwise with `stride`, 1x1.

    Takes [B, C, H, W] or tokens [B, H*W, C]; returns tokens [B, H'*W', C'].
    """

    def __init__(self, resolution: tuple[int, int], dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.act = nn.GELU()
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            h, w = self.resolution
            x = x.view(len(x), h, w, -1).permute(0, 3, 1, 2)
        x = self.act(self.conv2(self.act(self.conv1(x))))
        return self.conv3(x).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class Attention(nn.Module):
    """Multi-head attention inside one window, with LeViT's learned bias per (|dy|, |dx|) offset."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = dim // num_heads
        self.scale = self.key_dim ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        points = list(itertools.product(range(window), range(window)))
        offsets: dict[tuple[int, int], int] = {}
        idxs = [offsets.setdefault((abs(p[0] - q[0]), abs(p[1] - q[1])), len(offsets))
                for p in points for q in points]
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer("attention_bias_idxs", torch.tensor(idxs).view(len(points), len(points)),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, C]
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.key_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.key_dim, dim=3)
        attn = (q @ k.transpose(-2, -1)) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class TinyViTBlock(nn.Module):
    """Window attention (zero-padded to whole windows), depthwise 3x3 conv, MLP."""

    def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, window: int,
                 mlp_ratio: float, local_conv_size: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"TinyViT: width {dim} is not divisible by {num_heads} heads")
        self.resolution = resolution
        self.window = window
        self.attn = Attention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, n, c = x.shape
        s = self.window
        if h == s and w == s:
            return self.attn(x)
        pad_b, pad_r = (s - h % s) % s, (s - w % s) % s
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // s, pw // s
        x = x.view(b, nh, s, nw, s, c).transpose(2, 3).reshape(b * nh * nw, s * s, c)
        x = self.attn(x).view(b, nh, nw, s, s, c).transpose(2, 3).reshape(b, ph, pw, c)
        return x[:, :h, :w].reshape(b, n, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # tokens [B, H*W, C]
        h, w = self.resolution
        b, n, c = x.shape
        x = x + self._window_attention(x)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class Stage(nn.Module):
    """A stage's blocks, then an optional PatchMerging into the next stage (key `downsample`)."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of [B, C, H, W] (as in SAM's neck)."""

    def __init__(self, chans: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(chans))
        self.bias = nn.Parameter(torch.zeros(chans))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class TinyViT(nn.Module):
    """TinyViT image encoder for SAM: [B, 3, S, S] (normalised) -> [B, out_chans, S/r, S/r].

    `r` is `stem_stride * prod(merge_strides)`: 16 for MobileSAM (1024² -> 64²) and 4 for
    LiteMedSAM (256² -> 64²). `img_size` is read by segment_anything's `Sam.preprocess`.
    """

    def __init__(self, img_size: int, embed_dims: Sequence[int], depths: Sequence[int],
                 num_heads: Sequence[int], window_sizes: Sequence[int], in_chans: int = 3,
                 stem_stride: int = 4, merge_strides: Sequence[int] = (2, 2, 1), mlp_ratio: float = 4.0,
                 mbconv_expand_ratio: float = 4.0, local_conv_size: int = 3, out_chans: int = 256) -> None:
        super().__init__()
        stages = len(depths)
        if not (len(embed_dims) == len(num_heads) == len(window_sizes) == stages >= 2
                and len(merge_strides) == stages - 1):
            raise ValueError("TinyViT: embed_dims, depths, num_heads and window_sizes need one entry per "
                             "stage (at least 2) and merge_strides one per stage boundary")
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], stem_stride)
        side = img_size // stem_stride
        self.layers = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            res = (side, side)
            if i == 0:
                blocks: list[nn.Module] = [MBConv(dim, mbconv_expand_ratio) for _ in range(depth)]
            else:
                blocks = [TinyViTBlock(dim, res, num_heads[i], window_sizes[i], mlp_ratio, local_conv_size)
                          for _ in range(depth)]
            merge = None
            if i < stages - 1:
                merge = PatchMerging(res, dim, embed_dims[i + 1], merge_strides[i])
                side = (side - 1) // merge_strides[i] + 1  # 3x3 conv, padding 1
            self.layers.append(Stage(blocks, merge))
        self.embedding_size = side
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        b, _, c = x.shape
        side = self.embedding_size
        return self.neck(x.view(b, side, side, c).permute(0, 3, 1, 2))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)
