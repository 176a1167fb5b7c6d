"""The vision-language encoder's per-token outputs, read from open_clip's own modules.

RSRefSeg needs what CLIP's pooled `encode_image` / `encode_text` throw away: every visual patch
token and every text token, in the joint embedding space. These functions run the *standard*
towers (no block is modified, unlike models/clip/dense.py) and apply the final norm and projection
to every token. Supported: open_clip VisionTransformer or timm trunks (SigLIP), and the CLIP /
CustomTextCLIP text towers (TextTransformer).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def visual_tokens(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Normalised images [B, 3, S, S] at the encoder's size -> patch tokens [B, E, h, w] (joint space, not unit
    length)."""
    if hasattr(visual, "trunk"):  # open_clip TimmModel (SigLIP): timm's tokens after its final norm
        trunk = visual.trunk
        x = trunk.forward_features(images)[:, getattr(trunk, "num_prefix_tokens", 0):]
        x = visual.head(x)
    else:  # open_clip VisionTransformer: ln_post and proj on every token, class token dropped
        if getattr(visual, "attn_pool", None) is not None:
            raise ValueError("open_clip vision towers with attentional pooling are not supported by RSRefSeg")
        x = visual.transformer(visual._embeds(images))
        x = visual.ln_post(x)[:, 1:]
        if visual.proj is not None:
            x = x @ visual.proj
    b, n, e = x.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"expected a square patch grid, got {n} tokens")
    return x.transpose(1, 2).reshape(b, e, side, side)


def _text_tower(clip: nn.Module) -> nn.Module:
    """The module holding the text transformer, final norm and projection (CLIP keeps them on itself)."""
    tower = getattr(clip, "text", None)
    if tower is None:
        return clip
    if not hasattr(tower, "_embeds") or getattr(tower, "cls_emb", None) is not None:
        raise ValueError("RSRefSeg supports open_clip TextTransformer text towers (CLIP, SigLIP), not HF/CoCa ones")
    return tower


def project_text(projection: Any, x: torch.Tensor) -> torch.Tensor:
    """Apply a text projection that is a bare Parameter (CLIP) or a module (Linear, or LoRA-wrapped)."""
    if projection is None:
        return x
    return projection(x) if isinstance(projection, nn.Module) else x @ projection


def text_tokens(clip: nn.Module, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [B, L] -> (per-token features [B, L, E], pooled sentence embedding [B, E]), joint space."""
    from open_clip.transformer import text_global_pool

    tower = _text_tower(clip)
    if tower is clip:
        x = clip.token_embedding(text).to(clip.transformer.get_cast_dtype())
        x, mask = x + clip.positional_embedding.to(x.dtype), clip.attn_mask
        pool_type, eos = clip.text_pool_type, getattr(clip, "text_eos_id", None)
    else:
        x, mask = tower._embeds(text)
        pool_type, eos = tower.pool_type, getattr(tower, "eos_id", None)
    x = tower.ln_final(tower.transformer(x, attn_mask=mask))
    pooled = text_global_pool(x, text, pool_type, eos_token_id=eos)
    return project_text(tower.text_projection, x), project_text(tower.text_projection, pooled)


def logit_scale_bias(clip: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(s, b): the encoder's learned logit scale (exponentiated) and bias (None for CLIP, which has none)."""
    return clip.logit_scale.exp(), getattr(clip, "logit_bias", None)
