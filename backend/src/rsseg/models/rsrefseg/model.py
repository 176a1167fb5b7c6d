"""RSRefSeg as one nn.Module, split at the image encoders so image features can be cached.

encode(images) runs only the image encoders (CLIP's vision tower on the image resized to CLIP's
size, SAM's image encoder at SAM's size); decode(features, text) runs the text tower, the
semantics, the AttnPrompter, SAM's prompt encoder and mask decoder. A second sentence on the same
image therefore costs no image encoder.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..clip.builder import build_tokenizer, build_vl_encoder
from ..clip.tokens import pad_id
from .encoders import logit_scale_bias, text_tokens, visual_tokens
from .prompter import AttnPrompter, global_logits, local_semantics


class ImageFeatures(NamedTuple):
    """What `encode` keeps per image: CLIP patch tokens [B, E, h, w] and SAM embeddings [B, C, g, g]."""

    clip_tokens: torch.Tensor
    sam_embeddings: torch.Tensor


class Prompts(NamedTuple):
    sparse: torch.Tensor  # [B, n, C] AttnPrompter tokens
    dense: torch.Tensor  # [B, C, g, g] SAM's mask-path embedding of the global activation logits
    global_logits: torch.Tensor  # [B, 1, h, w] on CLIP's grid


def vl_model_config(clip_config: dict[str, Any]) -> dict[str, Any]:
    """The open_clip architecture dict (embed_dim, vision_cfg, text_cfg) a CLIP config names."""
    if "architecture" in clip_config:
        return clip_config["architecture"]
    from ..clip.builder import open_clip_module

    config = open_clip_module().get_model_config(clip_config["open_clip_model"])
    if config is None:
        raise ValueError(f"unknown open_clip model {clip_config['open_clip_model']!r}")
    return config


class RSRefSeg(nn.Module):
    """CLIP-family encoder + AttnPrompter + SAM; logits [B, 1, H, W] for one sentence per image."""

    def __init__(self, clip: nn.Module, sam: nn.Module, config: dict[str, Any], tokenizer: Any = None):
        super().__init__()
        vl = vl_model_config(config["clip"])
        self.clip, self.sam, self.config, self.tokenizer = clip, sam, config, tokenizer
        self.clip_size = int(vl["vision_cfg"]["image_size"])
        self.pad_token_id = pad_id(tokenizer) if tokenizer is not None else 0
        has_bias = getattr(clip, "logit_bias", None) is not None
        self.prompter = AttnPrompter(int(vl["embed_dim"]), int(config["sam"]["prompt_embed_dim"]),
                                     **config["prompter"], bias_init=None if has_bias else config["bias_init"])
        self.register_buffer("clip_mean", torch.tensor(config["clip_mean"]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(config["clip_std"]).view(1, -1, 1, 1), persistent=False)

    # -- image side (cacheable) ------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> ImageFeatures:
        """Images [B, 3, H, W] in 0..1 -> the image-only features (no text involved)."""
        size = self.clip_size
        clip_in = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        v = visual_tokens(self.clip.visual, (clip_in - self.clip_mean) / self.clip_std)
        size = self.sam.image_encoder.img_size
        sam_in = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        return ImageFeatures(v, self.sam.image_encoder((sam_in - self.sam.pixel_mean) / self.sam.pixel_std))

    # -- text side ---------------------------------------------------------------------------------
    def tokenize(self, sentences: Sequence[str]) -> torch.Tensor:
        if self.tokenizer is None:
            raise ValueError("this RSRefSeg was built without a tokenizer")
        return self.tokenizer(list(sentences)).to(self.clip.logit_scale.device)

    def scale_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale, bias = logit_scale_bias(self.clip)
        return scale, bias if bias is not None else self.prompter.logit_bias

    def prompts(self, v: torch.Tensor, text: torch.Tensor) -> Prompts:
        """CLIP patch tokens V and token ids [B, L] -> SAM's sparse and dense prompts."""
        tokens, sentence = text_tokens(self.clip, text)
        scale, bias = self.scale_bias()
        f_local = local_semantics(v, tokens, text != self.pad_token_id, scale, bias)
        logits = global_logits(v, sentence, scale, bias)
        f_global = torch.sigmoid(logits) * v
        pe_layer = self.sam.prompt_encoder.pe_layer
        sparse = self.prompter(f_local, f_global, v, pe_layer(tuple(v.shape[-2:])))
        masks = None
        if self.config.get("dense_prompt", True):
            size = self.sam.prompt_encoder.mask_input_size
            masks = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        _, dense = self.sam.prompt_encoder(points=None, boxes=None, masks=masks)
        if masks is None:
            dense = dense.expand(v.shape[0], -1, -1, -1)
        return Prompts(sparse, dense, logits)

    def decode(self, features: ImageFeatures, text: torch.Tensor, out_size: Optional[tuple[int, int]] = None
               ) -> torch.Tensor:
        """Cached features + token ids -> mask logits [B, 1, H, W] (SAM's low-res masks, upsampled)."""
        v, embeddings = features
        prompts = self.prompts(v, text)
        image_pe = self.sam.prompt_encoder.get_dense_pe()
        masks = []
        for i in range(v.shape[0]):  # SAM's decoder broadcasts one image over its prompts: go per image
            low_res, _ = self.sam.mask_decoder(image_embeddings=embeddings[i:i + 1], image_pe=image_pe,
                                               sparse_prompt_embeddings=prompts.sparse[i:i + 1],
                                               dense_prompt_embeddings=prompts.dense[i:i + 1],
                                               multimask_output=False)
            masks.append(low_res)
        logits = torch.cat(masks)
        if out_size is not None and tuple(logits.shape[-2:]) != tuple(out_size):
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images), text, tuple(images.shape[-2:]))


def build_rsrefseg(config: dict[str, Any], seed: int = 0, with_tokenizer: bool = True) -> RSRefSeg:
    """A randomly initialised (seeded) RSRefSeg; `with_tokenizer=False` avoids SigLIP's tokenizer download."""
    from ..sam.builder import build_sam

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip = build_vl_encoder(config["clip"], seed)
        sam = build_sam(config["sam"])
        tokenizer = build_tokenizer(config["clip"]) if with_tokenizer else None
        return RSRefSeg(clip, sam, config, tokenizer)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 5.0,
                      dice_weight: float = 0.0) -> torch.Tensor:
    """The authors' loss: BCE with weight 5, plus an optional soft Dice term (target: 0/1, same shape)."""
    target = target.to(logits.dtype)
    loss = bce_weight * F.binary_cross_entropy_with_logits(logits, target)
    if dice_weight:
        prob = torch.sigmoid(logits).flatten(1)
        flat = target.flatten(1)
        dice = 1 - (2 * (prob * flat).sum(1) + 1) / (prob.sum(1) + flat.sum(1) + 1)
        loss = loss + dice_weight * dice.mean()
    return loss


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, e.g. after LoRA."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
