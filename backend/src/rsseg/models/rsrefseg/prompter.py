"""Text-activated visual features and the AttnPrompter that turns them into SAM prompts.

Local semantics: every (non-padding) text token T_d activates the patches it matches,
A_d = sigmoid(s<V,T_d> + b); local = mean_d(A_d * V); F_local = (V + local) / 2.
Global semantics: the sentence embedding t gives A_g = sigmoid(s<V,t> + b); F_global = A_g * V.
Similarities use L2-normalised V, T_d, t; the activated features scale the raw V (as the authors'
code does), so the prompter sees the encoder's own feature magnitudes.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def similarity_logits(v: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """s<V,T> + b for V [B, E, h, w] and T [B, D, E] -> [B, D, h, w] (cosine similarity, scaled)."""
    return torch.einsum("behw,bde->bdhw", F.normalize(v, dim=1), F.normalize(text, dim=-1)) * scale + bias


def local_semantics(v: torch.Tensor, tokens: torch.Tensor, valid: torch.Tensor, scale: torch.Tensor,
                    bias: torch.Tensor) -> torch.Tensor:
    """F_local [B, E, h, w]: V averaged with its activation by each valid token (valid: bool [B, D])."""
    act = torch.sigmoid(similarity_logits(v, tokens, scale, bias))  # [B, D, h, w]
    weights = valid.to(act.dtype)[:, :, None, None]
    mean_act = (act * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp_min(1.0)
    return (v + mean_act * v) / 2  # mean_d(A_d * V) = mean_d(A_d) * V


def global_logits(v: torch.Tensor, sentence: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Global activation logits [B, 1, h, w] of the sentence embedding [B, E]; also SAM's dense prompt."""
    return similarity_logits(v, sentence[:, None], scale, bias)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":  # the authors' choice (SyncBN)
        return nn.BatchNorm2d(channels)
    if kind == "group":  # batch-size independent alternative
        return nn.GroupNorm(1, channels)
    raise ValueError(f"unknown prompter norm {kind!r} (expected 'batch' or 'group')")


def _conv_block(cin: int, cout: int, kernel: int, stride: int, norm: str) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), _norm(norm, cout), nn.GELU())


class AttnPrompter(nn.Module):
    """[F_local, F_global, V] -> sparse prompt tokens [B, n, C] for SAM's mask decoder.

    1x1 conv to SAM's prompt width + norm + GELU, + SAM's positional encoding at the grid,
    `down_blocks` stride-2 3x3 conv blocks (27 -> 14 -> 7 for two), a final 1x1 conv, flattened.
    Owns the fallback logit bias for encoders that have none (CLIP): learnable, starting at
    `bias_init`, since sigmoid(s<V,T>) with CLIP's s of up to 100 and no bias saturates at 1.
    """

    def __init__(self, embed_dim: int, prompt_dim: int, down_blocks: int = 2, norm: str = "batch",
                 bias_init: Optional[float] = None):
        super().__init__()
        self.reduce = _conv_block(3 * embed_dim, prompt_dim, 1, 1, norm)
        self.down = nn.Sequential(*[_conv_block(prompt_dim, prompt_dim, 3, 2, norm) for _ in range(down_blocks)])
        self.out = nn.Conv2d(prompt_dim, prompt_dim, 1)
        self.logit_bias = nn.Parameter(torch.tensor(float(bias_init))) if bias_init is not None else None

    def forward(self, f_local: torch.Tensor, f_global: torch.Tensor, v: torch.Tensor,
                pe: torch.Tensor) -> torch.Tensor:
        """Three [B, E, h, w] maps and a positional encoding [C, h, w] -> tokens [B, h'*w', C]."""
        x = self.reduce(torch.cat([f_local, f_global, v], dim=1)) + pe[None]
        x = self.out(self.down(x))
        return x.flatten(2).transpose(1, 2)
