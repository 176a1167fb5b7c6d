"""SGSeg's cost aggregation: Swin blocks over each class's cost map, then linear attention across classes.

The cost volume [B, C, K, h, w] holds one C-wide embedding per class and pixel. An `AggregatorLayer` first lets
each class's map look at its neighbours (two Swin blocks, plain then shifted windows, with the image's appearance
features steering where to look), then lets each pixel's K class embeddings look at one another (linear attention,
steered by the text embeddings), so that a class is scored relative to the others. Written from the CAT-Seg
description (Cho et al., CVPR 2024); nothing here depends on how many classes a request names.

Guidance is shared: the appearance map is the same for every class, the text embedding the same for every pixel.
Attention that reads `concat(norm(x), guidance)` is computed as `W_x norm(x) + W_g guidance`, the same linear
map, so the guidance is projected once per image (or per class) and broadcast instead of copied K (or h*w) times.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Mlp(nn.Module):
    """Transformer feed-forward: Linear, GELU, Linear (channels last)."""

    def __init__(self, dim: int, ratio: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim * ratio)
        self.fc2 = nn.Linear(dim * ratio, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def _shared(x: Tensor, guidance: Tensor) -> Tensor:
    """`x` [N, ...] plus `guidance` [G, ...] where N = G * r: guidance item i serves x items i*r .. i*r + r - 1
    (the classes of image i, folded into the batch class-minor), broadcast rather than repeated."""
    n, g = x.shape[0], guidance.shape[0]
    if n % g:
        raise ValueError(f"guidance batch {g} does not divide the batch {n}")
    return (x.view(g, n // g, *x.shape[1:]) + guidance.unsqueeze(1)).view(x.shape)


def _window_groups(size: int, window: int, shift: int, device: torch.device) -> Tensor:
    """Label of the (shifted) window each position of a padded axis falls in: windows start at `shift`, and the
    positions before it form a window of their own (in the rolled frame they share a window with the end of the
    axis but must not see it: the standard shifted-window mask)."""
    return torch.div(torch.arange(size, device=device) - shift, window, rounding_mode="floor")


class SpatialBlock(nn.Module):
    """One Swin block on per-class cost embeddings, with appearance guidance in queries and keys.

    x [N, C, h, w] -> [N, C, h, w]; guidance [N / r, G, h, w] for any r dividing N (r = K: one map per image,
    shared by its K classes, which are folded into the batch class-minor), or None when guidance_dim is 0.

    Windows: each axis uses min(window, size) so a map smaller than the window is one window along that axis (the
    same result as padding it up to the window with the pad masked out, only cheaper); an axis the window covers
    is not shifted. Sizes that are not multiples of the window are zero-padded at the end and cropped after; the
    pad positions are masked out as keys, so the output at real pixels does not depend on the padding.
    """

    def __init__(self, dim: int, guidance_dim: int, heads: int, window: int, shift: int = 0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not a multiple of {heads} heads")
        if not 0 <= shift < window:
            raise ValueError(f"shift {shift} must be in [0, window {window})")
        self.dim, self.heads, self.window, self.shift = dim, heads, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.qk = nn.Linear(dim, 2 * dim)
        self.qk_guidance = nn.Linear(guidance_dim, 2 * dim, bias=False) if guidance_dim else None
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        # One learned bias per head and relative offset (dy, dx), each in [-(window - 1), window - 1].
        self.position_bias = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.position_bias, std=0.02)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)

    def _relative_bias(self, wh: int, ww: int, device: torch.device) -> Tensor:
        """[heads, L, L] bias for a wh x ww window (L = wh * ww); a window clamped smaller than `window` reads the
        central part of the table."""
        ys, xs = torch.meshgrid(torch.arange(wh, device=device), torch.arange(ww, device=device), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        dy = ys[:, None] - ys[None, :] + self.window - 1
        dx = xs[:, None] - xs[None, :] + self.window - 1
        index = dy * (2 * self.window - 1) + dx
        return self.position_bias[index].permute(2, 0, 1)

    @staticmethod
    def _mask(h: int, w: int, win: tuple[int, int], shift: tuple[int, int], pad: tuple[int, int],
              device: torch.device) -> Tensor | None:
        """[nW, 1, L, L] additive mask (0 or -inf) in the rolled, window-partitioned frame, or None if nothing is
        masked. A query sees keys of its own (unshifted-frame) window that are real pixels, and always itself, so no
        row is empty (pad queries are cropped anyway)."""
        if not any(shift) and not any(pad):
            return None
        hp, wp = h + pad[0], w + pad[1]
        rows, cols = _window_groups(hp, win[0], shift[0], device), _window_groups(wp, win[1], shift[1], device)
        group = rows[:, None] * (wp + 1) + cols[None, :]  # unique per (row group, col group)
        real = (torch.arange(hp, device=device)[:, None] < h) & (torch.arange(wp, device=device)[None, :] < w)
        group = SpatialBlock._partition(torch.roll(group, (-shift[0], -shift[1]), (0, 1))[None, ..., None], win)
        real = SpatialBlock._partition(torch.roll(real, (-shift[0], -shift[1]), (0, 1))[None, ..., None], win)
        group, real = group[0, ..., 0], real[0, ..., 0]  # [nW, L]
        allowed = (group[:, :, None] == group[:, None, :]) & real[:, None, :]
        allowed |= torch.eye(allowed.shape[-1], dtype=torch.bool, device=device)
        mask = torch.zeros(allowed.shape, device=device).masked_fill(~allowed, float("-inf"))
        return mask.unsqueeze(1)

    @staticmethod
    def _partition(x: Tensor, win: tuple[int, int]) -> Tensor:
        """[N, H, W, D] -> [N, nW, L, D]."""
        n, h, w, d = x.shape
        x = x.view(n, h // win[0], win[0], w // win[1], win[1], d).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(n, -1, win[0] * win[1], d)

    @staticmethod
    def _merge(x: Tensor, win: tuple[int, int], h: int, w: int) -> Tensor:
        """[N, nW, L, D] -> [N, H, W, D], the inverse of `_partition`."""
        n, d = x.shape[0], x.shape[-1]
        x = x.view(n, h // win[0], w // win[1], win[0], win[1], d).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(n, h, w, d)

    def _attention(self, x: Tensor, guidance: Tensor | None) -> Tensor:
        """Windowed multi-head self-attention, channels last: [N, h, w, C] (already normalised) -> same."""
        n, h, w, c = x.shape
        win = (min(self.window, h), min(self.window, w))
        shift = (self.shift if win[0] < h else 0, self.shift if win[1] < w else 0)  # no shift across a whole axis
        pad = ((-h) % win[0], (-w) % win[1])
        qk = self.qk(x)
        if self.qk_guidance is not None:
            if guidance is None:
                raise ValueError("this block expects appearance guidance")
            qk = _shared(qk, self.qk_guidance(guidance.permute(0, 2, 3, 1)))
        qkv = torch.cat([qk, self.v(x)], dim=-1)
        if any(pad):
            qkv = F.pad(qkv, (0, 0, 0, pad[1], 0, pad[0]))
        if any(shift):
            qkv = torch.roll(qkv, (-shift[0], -shift[1]), (1, 2))
        hp, wp = h + pad[0], w + pad[1]
        windows = self._partition(qkv, win)  # [N, nW, L, 3C]
        nw, length = windows.shape[1], windows.shape[2]
        q, k, v = windows.view(n, nw, length, 3, self.heads, c // self.heads).permute(3, 0, 1, 4, 2, 5)
        bias = self._relative_bias(*win, device=x.device).to(q.dtype)
        mask = self._mask(h, w, win, shift, pad, x.device)
        if mask is not None:
            bias = bias + mask.to(q.dtype)  # [nW, heads, L, L]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [N, nW, heads, L, C / heads]
        out = self._merge(out.transpose(2, 3).reshape(n, nw, length, c), win, hp, wp)
        if any(shift):
            out = torch.roll(out, shift, (1, 2))
        return self.proj(out[:, :h, :w])

    def forward(self, x: Tensor, guidance: Tensor | None = None) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = x + self._attention(self.norm1(x), guidance)
        x = x + self.mlp(self.norm2(x))
        return x.permute(0, 3, 1, 2)


class ClassAggregation(nn.Module):
    """Linear attention across the class axis at each pixel, with text guidance in queries and keys.

    x [B, C, K, h, w], text [B, K, T] -> [B, C, K, h, w]. Linear attention (feature map elu + 1, Katharopoulos et
    al. 2020) costs O(K) rather than O(K^2) per pixel. With fewer than `max_classes` classes the axis is padded with
    one learned token (a [C] embedding, a [T] guidance) up to `max_classes`, so a request naming few classes still
    sees a crowd to compare against, as in training; the pad tokens are identical, so permuting the real classes
    permutes the output, and they are dropped from it.
    """

    def __init__(self, dim: int, guidance_dim: int, heads: int, max_classes: int, eps: float = 1e-6) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not a multiple of {heads} heads")
        self.heads, self.max_classes, self.eps = heads, max_classes, eps
        self.pad_token = nn.Parameter(torch.zeros(dim))
        self.pad_guidance = nn.Parameter(torch.zeros(guidance_dim))
        nn.init.trunc_normal_(self.pad_token, std=0.02)
        nn.init.trunc_normal_(self.pad_guidance, std=0.02)
        self.norm1 = nn.LayerNorm(dim)
        self.qk = nn.Linear(dim, 2 * dim)
        self.qk_guidance = nn.Linear(guidance_dim, 2 * dim, bias=False)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)

    def _linear_attention(self, q: Tensor, k: Tensor, v: Tensor, pad: int = 0, pad_k: Optional[Tensor] = None,
                          pad_v: Optional[Tensor] = None) -> Tensor:
        """q, k, v [M, K, C] -> [M, K, C], heads split from C; `pad` identical tokens with key pad_k and value
        pad_v [C] join the keys and values. Their sums are one term times `pad`, so they cost no memory."""
        m, n, c = q.shape
        d = c // self.heads
        q, k, v = (t.view(m, n, self.heads, d) for t in (q, k, v))
        q, k = F.elu(q) + 1, F.elu(k) + 1
        kv = torch.einsum("mnhd,mnhe->mhde", k, v)
        k_sum = k.sum(dim=1)
        if pad:
            fk, pv = F.elu(pad_k.view(self.heads, d)) + 1, pad_v.view(self.heads, d)
            kv = kv + pad * torch.einsum("hd,he->hde", fk, pv)
            k_sum = k_sum + pad * fk
        norm = torch.einsum("mnhd,mhd->mnh", q, k_sum) + self.eps
        return (torch.einsum("mnhd,mhde->mnhe", q, kv) / norm.unsqueeze(-1)).reshape(m, n, c)

    def forward(self, x: Tensor, text: Tensor) -> Tensor:
        b, c, k, h, w = x.shape
        tokens = x.permute(0, 3, 4, 2, 1).reshape(b, h * w, k, c)  # one row of K tokens per pixel
        pad = max(self.max_classes - k, 0)
        normed = self.norm1(tokens)
        qk = self.qk(normed) + self.qk_guidance(text).unsqueeze(1)  # text shared by every pixel
        q, kk = qk.chunk(2, dim=-1)
        pad_k = pad_v = None
        if pad:  # a pad token is the same at every pixel: one key and one value
            pad_normed = self.norm1(self.pad_token.to(tokens.dtype))
            pad_k = (self.qk(pad_normed) + self.qk_guidance(self.pad_guidance.to(text.dtype))).chunk(2)[1]
            pad_v = self.v(pad_normed)
        out = self._linear_attention(q.reshape(b * h * w, k, c), kk.reshape(b * h * w, k, c),
                                     self.v(normed).reshape(b * h * w, k, c), pad, pad_k, pad_v)
        tokens = tokens + self.proj(out.view(b, h * w, k, c))
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens.view(b, h, w, k, c).permute(0, 4, 3, 1, 2)


class AggregatorLayer(nn.Module):
    """Spatial then class aggregation of a cost volume.

    cost [B, hidden, K, h, w], appearance [B, appearance_dim, h, w], text [B, K, text_dim] -> [B, hidden, K, h, w].
    Each class's map goes through a plain-window and a shifted-window `SpatialBlock` (the appearance map is shared
    by the K classes), then every pixel through `ClassAggregation`.
    """

    def __init__(self, hidden: int, appearance_dim: int, text_dim: int, heads: int, window: int,
                 max_classes: int) -> None:
        super().__init__()
        self.spatial = nn.ModuleList([SpatialBlock(hidden, appearance_dim, heads, window, shift=0),
                                      SpatialBlock(hidden, appearance_dim, heads, window, shift=window // 2)])
        self.classes = ClassAggregation(hidden, text_dim, heads, max_classes)

    def forward(self, cost: Tensor, appearance: Tensor, text: Tensor) -> Tensor:
        b, c, k, h, w = cost.shape
        x = cost.transpose(1, 2).reshape(b * k, c, h, w)  # classes into the batch, class-minor
        for block in self.spatial:
            x = block(x, appearance)
        x = x.view(b, k, c, h, w).transpose(1, 2)
        return self.classes(x, text)
