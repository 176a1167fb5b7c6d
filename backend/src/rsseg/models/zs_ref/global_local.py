"""CLIP global-local features of mask proposals (Yu et al., CVPR 2023, "Zero-shot Referring Image
Segmentation with Global-Local Context Features").

Global: the whole view goes through CLIP's ViT; from block `mask_block` on, every token may attend
only to the class token and to the patches the proposal covers (token masking), so the class token
describes the proposal *in its context*. Local: the proposal's box (made square) is cropped with
everything outside the mask set to CLIP's mean colour, so the class token describes the object alone.
The visual feature is alpha * global + (1 - alpha) * local; the text feature is beta * sentence +
(1 - beta) * noun phrase (the paper's alpha 0.85 for long RefCOCOg-like sentences, beta 0.5). Both
image-side features depend on the view and the proposals only, so they are cached with the proposals
and a second sentence on the same view runs the text tower alone.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from ..clip.dense import interpolate_positions


@dataclass(frozen=True)
class ScoringConfig:
    global_size: int = 336  # the view's side for the global pass (CLIP positions interpolated; 224 in the paper)
    mask_block: int = -3  # token masking from this block on (negative: counted from the end; ViT-B/16: block 9)
    global_weight: float = 0.85  # alpha: global vs local visual feature
    sentence_weight: float = 0.5  # beta: whole sentence vs its noun phrase
    crop_margin: float = 0.1  # context around a proposal's box in the local crop, as a share of its side
    proposals_per_pass: int = 16  # proposals per masked global pass (bounds the attention memory)
    logit_scale: float = 100.0  # CLIP's: cosine similarities -> softmax over proposals

    @classmethod
    def from_dict(cls, data: dict) -> "ScoringConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _tokens(visual: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Normalised images [B, 3, S, S] -> tokens [B, 1 + g*g, D] after ln_pre, and the patch grid."""
    x = visual.conv1(images)
    b, width, gh, gw = x.shape
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(b, 1, width)
    x = torch.cat([cls, x], dim=1) + interpolate_positions(visual.positional_embedding, (gh, gw)).to(x.dtype)
    return visual.ln_pre(x), (gh, gw)


def _blocks(transformer: torch.nn.Module, x: torch.Tensor, blocks, attn_mask=None) -> torch.Tensor:
    """Run `blocks` on batch-first tokens, whichever layout this open_clip's transformer uses."""
    first = getattr(transformer, "batch_first", True)
    x = x if first else x.transpose(0, 1)
    for block in blocks:
        x = block(x, attn_mask=attn_mask)
    return x if first else x.transpose(0, 1)


def patch_masks(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Proposal masks [N, H, W] -> [N, gh, gw] bool: the patches a mask touches (a mask smaller than a patch
    still owns the patch it lies in)."""
    coverage = F.adaptive_avg_pool2d(masks[:, None].float(), grid)[:, 0]
    return coverage > 0


def global_features(clip, images: torch.Tensor, masks: torch.Tensor, config: ScoringConfig) -> torch.Tensor:
    """One normalised square view [1, 3, S, S] and its proposals' masks [N, H, H] on the same square at any
    resolution -> [N, E] L2-normalised features."""
    visual = clip.visual
    x, grid = _tokens(visual, images)
    blocks = list(visual.transformer.resblocks)
    start = config.mask_block % len(blocks)
    x = _blocks(visual.transformer, x, blocks[:start])
    heads = blocks[start].attn.num_heads
    out = []
    for i in range(0, len(masks), config.proposals_per_pass):
        keep = patch_masks(masks[i:i + config.proposals_per_pass], grid).flatten(1)  # [n, g*g]
        allowed = F.pad(keep, (1, 0), value=True)  # the class token always
        n, length = allowed.shape
        bias = torch.zeros(n, length, dtype=x.dtype, device=x.device).masked_fill(~allowed, float("-inf"))
        bias = bias[:, None, None, :].expand(n, heads, length, length).reshape(n * heads, length, length)
        y = _blocks(visual.transformer, x.expand(n, -1, -1), blocks[start:], attn_mask=bias)
        out.append(visual.ln_post(y[:, 0]) @ visual.proj)
    if not out:
        return torch.zeros(0, visual.proj.shape[1], device=images.device)
    return F.normalize(torch.cat(out).float(), dim=-1)


def square_boxes(boxes: torch.Tensor, size: tuple[int, int], margin: float) -> torch.Tensor:
    """Boxes [N, 4] (x0, y0, x1, y1) grown by `margin` and made square around their centre, in integers."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1).clamp(min=1.0) * (1 + 2 * margin)
    half = (side / 2)[:, None]
    lo, hi = (centre - half).floor(), (centre + half).ceil()
    return torch.cat([lo, hi], dim=1).long()


def local_features(clip, image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor,
                   config: ScoringConfig, batch: int = 32) -> torch.Tensor:
    """A normalised view [3, H, W] (0 is CLIP's mean colour) and proposals -> [N, E] L2-normalised features
    of each proposal's masked, square crop at CLIP's input size."""
    side = int(clip.visual.image_size[0] if isinstance(clip.visual.image_size, tuple) else clip.visual.image_size)
    height, width = image.shape[-2:]
    squares = square_boxes(boxes, (height, width), config.crop_margin)
    out = []
    for i in range(0, len(masks), batch):
        crops = []
        for mask, (x0, y0, x1, y1) in zip(masks[i:i + batch], squares[i:i + batch].tolist()):
            masked = image * mask  # outside the proposal: CLIP's mean colour
            pad = (max(0, -x0), max(0, x1 - width), max(0, -y0), max(0, y1 - height))
            crop = F.pad(masked, pad)[:, y0 + pad[2]:y1 + pad[2], x0 + pad[0]:x1 + pad[0]]
            crops.append(F.interpolate(crop[None], size=(side, side), mode="bilinear", align_corners=False,
                                       antialias=True)[0])
        out.append(clip.encode_image(torch.stack(crops)))
    if not out:
        return torch.zeros(0, clip.visual.proj.shape[1], device=image.device)
    return F.normalize(torch.cat(out).float(), dim=-1)


def visual_features(global_feats: torch.Tensor, local_feats: torch.Tensor, config: ScoringConfig) -> torch.Tensor:
    alpha = config.global_weight
    return F.normalize(alpha * global_feats + (1 - alpha) * local_feats, dim=-1)


def text_features(clip, tokenizer, texts: list[str], device: str) -> torch.Tensor:
    """[T, E] L2-normalised embeddings of the texts as written (no template: a sentence is its own prompt)."""
    return F.normalize(clip.encode_text(tokenizer(texts).to(device)).float(), dim=-1)
