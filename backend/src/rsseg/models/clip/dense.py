"""Dense (per-patch) CLIP image features for training-free open-vocabulary segmentation.

CLIP's last block mixes every patch with the class token, which is what makes its patch tokens
useless for segmentation. Following SCLIP / ClearCLIP / SegEarth-OV, the last block is replaced by
self-self attention (softmax(qq^T) + softmax(kk^T) + softmax(vv^T)) @ v, without the residual
connection and without the MLP; the final norm and projection then apply to every token, putting
each patch in the text embedding space. The class token is returned too, for CLS-bias removal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def self_self_attention(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The modified last block on tokens [B, L, D]: attention output only (no residual, no MLP)."""
    attn = block.attn  # torch.nn.MultiheadAttention with a packed in-projection, as in open_clip
    b, n, d = x.shape
    heads = attn.num_heads
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(b, n, heads, d // heads).transpose(1, 2) for t in (q, k, v))
    scale = (d // heads) ** -0.5
    weights = sum(torch.softmax(t @ t.transpose(-2, -1) * scale, dim=-1) for t in (q, k, v))
    out = (weights @ v).transpose(1, 2).reshape(b, n, d)
    return block.ls_1(attn.out_proj(out))


def interpolate_positions(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Positional embedding [1 + g*g, D] resized (bicubic) to another patch grid, class token kept."""
    cls, patches = pos[:1], pos[1:]
    side = int(math.isqrt(patches.shape[0]))
    if (side, side) == tuple(grid):
        return pos
    patches = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches.float(), size=grid, mode="bicubic", align_corners=False).to(pos.dtype)
    return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)])


def embed_patches(visual: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """The tokens a VisionTransformer's first block takes ([B, 1 + h*w, width]: class token, then patches with
    positions resized to the grid) and the patch grid (h, w)."""
    x = visual.conv1(images)
    b, width, gh, gw = x.shape
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(b, 1, width)
    x = torch.cat([cls, x], dim=1) + interpolate_positions(visual.positional_embedding, (gh, gw)).to(x.dtype)
    return visual.ln_pre(x), (gh, gw)


def dense_features(visual: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """open_clip VisionTransformer + normalised images [B, 3, H, W] -> (patches [B, E, h, w], cls [B, E]).

    Both are in the joint embedding space (after ln_post and proj) and not yet L2-normalised.
    """
    x, (gh, gw) = embed_patches(visual, images)
    b = x.shape[0]
    transformer = visual.transformer
    if not getattr(transformer, "batch_first", True):  # older open_clip runs blocks sequence-first
        x = x.transpose(0, 1)
        for block in transformer.resblocks[:-1]:
            x = block(x)
        x = x.transpose(0, 1)
    else:
        for block in transformer.resblocks[:-1]:
            x = block(x)
    x = self_self_attention(transformer.resblocks[-1], x)
    x = visual.ln_post(x) @ visual.proj
    patches = x[:, 1:].transpose(1, 2).reshape(b, -1, gh, gw)
    return patches, x[:, 0]
