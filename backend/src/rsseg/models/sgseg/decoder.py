"""SGSeg's decoder: up-samples each class's aggregated cost map to logits, guided by finer image features.

Classes are folded into the batch (class-minor: item b * K + k), so every class is decoded by the same weights and
the decoder does not care how many classes a request names. The guidance maps are the same for all K classes of an
image: the first convolution after the concat is split into its cost part and its guidance part (the same linear
map as a convolution over the concatenation), so the guidance is convolved once per image and broadcast over the
classes instead of being copied K times.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn


def _groups(channels: int, most: int = 16) -> int:
    """GroupNorm groups: the largest divisor of `channels` up to min(most, channels // 4) (at least 1), so each
    group keeps a few channels."""
    for groups in range(max(min(most, channels // 4), 1), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


class UpBlock(nn.Module):
    """x2 up-sampling (transposed convolution to in_dim // 2), concat a guidance map, two 3x3 conv-GroupNorm-ReLU.

    x [N, in_dim, h, w], guidance [N / r, guidance_dim, 2h, 2w] for any r dividing N (r = K: one map per image
    shared by its K classes) or None when guidance_dim is 0 -> [N, out_dim, 2h, 2w].
    """

    def __init__(self, in_dim: int, out_dim: int, guidance_dim: int) -> None:
        super().__init__()
        if in_dim % 2:
            raise ValueError(f"UpBlock halves its input width: {in_dim} is odd")
        self.up = nn.ConvTranspose2d(in_dim, in_dim // 2, kernel_size=2, stride=2)
        self.conv1 = nn.Conv2d(in_dim // 2, out_dim, 3, padding=1, bias=False)
        self.conv1_guidance = nn.Conv2d(guidance_dim, out_dim, 3, padding=1, bias=False) if guidance_dim else None
        self.norm1 = nn.GroupNorm(_groups(out_dim), out_dim)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(_groups(out_dim), out_dim)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, guidance: Tensor | None = None) -> Tensor:
        x = self.conv1(self.up(x))
        if self.conv1_guidance is not None:
            if guidance is None:
                raise ValueError("this block expects a guidance map")
            n, g = x.shape[0], guidance.shape[0]
            if n % g:
                raise ValueError(f"guidance batch {g} does not divide the batch {n}")
            x = (x.view(g, n // g, *x.shape[1:]) + self.conv1_guidance(guidance).unsqueeze(1)).view(x.shape)
        x = self.act(self.norm1(x))
        return self.act(self.norm2(self.conv2(x)))


class CostDecoder(nn.Module):
    """Aggregated cost [B, hidden, K, h, w] -> logits [B, K, h * 2**len(dims), w * 2**len(dims)].

    guidance[i] [B, guidance_dims[i], h * 2**(i + 1), w * 2**(i + 1)] guides UpBlock i (None where guidance_dims[i]
    is 0); a 3x3 convolution to one channel scores each class at each pixel.
    """

    def __init__(self, hidden: int, dims: Sequence[int] = (64, 32), guidance_dims: Sequence[int] = (32, 16)) -> None:
        super().__init__()
        if len(dims) != len(guidance_dims):
            raise ValueError(f"{len(dims)} decoder widths but {len(guidance_dims)} guidance widths")
        ins = [hidden, *dims[:-1]]
        self.blocks = nn.ModuleList([UpBlock(i, o, g) for i, o, g in zip(ins, dims, guidance_dims)])
        self.head = nn.Conv2d(dims[-1] if dims else hidden, 1, 3, padding=1)

    def forward(self, cost: Tensor, guidance: Sequence[Tensor | None]) -> Tensor:
        if len(guidance) != len(self.blocks):
            raise ValueError(f"{len(self.blocks)} guidance maps expected, got {len(guidance)}")
        b, c, k, h, w = cost.shape
        x = cost.transpose(1, 2).reshape(b * k, c, h, w)  # classes into the batch, class-minor
        for block, g in zip(self.blocks, guidance):
            x = block(x, g)
        x = self.head(x)
        return x.view(b, k, *x.shape[-2:])

