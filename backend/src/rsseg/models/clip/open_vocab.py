"""Training-free open-vocabulary segmentation with CLIP (the recipe of docs/open-vocab.md).

Per tile: sliding windows (224, stride 112 by default) -> dense CLIP patch features
(models/clip/dense.py) -> logits = 50 * (patch . T) + lambda * 50 * (cls . T) with lambda = -0.3
(CLS-bias removal), for the L2-normalised patch, CLS and class-name embeddings T -> the best synonym per class ->
coarse logits upsampled to the window (joint bilateral by default; bilinear or guided filter) and
averaged where windows overlap -> optionally sharpened with a SAM (peaks or vote). Split at the image encoder
(EncodedTileModel), so a second prompt on the same extent reuses the cached patch features and runs only the text
tower and this decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import ModelError
from ...execution.host_to_device import tiles_to_device
from ...windows import tile_starts
from ..prompts import display_name, synonyms
from .dense import dense_features
from .text import IMAGENET_TEMPLATES, class_embeddings, class_logits
from .tokens import class_name_notes

SAM_MODES = ("off", "peaks", "vote")


@dataclass(frozen=True)
class OpenVocabConfig:
    window: int = 224  # CLIP's training size: the sliding window in (processing) pixels
    stride: int = 112
    cls_lambda: float = -0.3  # logits + lambda * (cls logits) remove the global bias every patch shares
    logit_scale: float = 50.0
    # Each window's coarse logits (1/16 of the window for ViT-B/16) reach pixels through this
    # (models/refine/upsample.py: bilinear, guided or jbu), with these options; docs/refinement.md.
    upsample: str = "jbu"
    upsample_options: dict = field(default_factory=dict)
    # Optional SAM refinement of each tile's class logits: the SAM component's id, the mode (off,
    # peaks, vote) and its options (models/refine/sam_refine.py).
    sam: str = ""
    sam_refine: str = "off"
    sam_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ..refine import METHODS

        if self.upsample not in METHODS:
            raise ModelError(f"unknown upsampling {self.upsample!r}; expected one of {', '.join(METHODS)}")
        if self.sam_refine not in SAM_MODES:
            raise ModelError(f"unknown SAM refinement {self.sam_refine!r}; expected one of {', '.join(SAM_MODES)}")
        if self.sam_refine != "off" and not self.sam:
            raise ModelError("SAM refinement needs a SAM: this model's config names none")

    @classmethod
    def from_dict(cls, data: dict) -> "OpenVocabConfig":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _windows(length: int, window: int, stride: int) -> tuple[int, list[int]]:
    size = min(window, length)
    return size, tile_starts(length, size, max(0, size - stride))


class OpenVocabCLIP:
    """EncodedTileModel over an open_clip CLIP; one instance per prompt (the CLIP itself is shared)."""

    def __init__(self, clip, tokenizer, prompts: list[str], activation: str, *, mean, std,
                 config: OpenVocabConfig, device: str, encoder_id: str, sam: Any = None):
        if (sam is None) != (config.sam_refine == "off"):
            raise ValueError("pass a SAM exactly when the config's SAM refinement is on")
        self.clip, self.device, self.config, self.sam = clip, device, config, sam
        self.class_names = tuple(display_name(p) for p in prompts)
        self.activation = activation
        self.n_inputs = 3
        self.encoder_id = encoder_id
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._text, self._owner = class_embeddings(clip, tokenizer, list(prompts), device=device)
        # CLIP reads 77 tokens of each prompt template: say which class names did not fit (result notes)
        self.notes = class_name_notes(tokenizer, [name for line in prompts for name in synonyms(line)],
                                      IMAGENET_TEMPLATES)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(batch))

    @torch.no_grad()
    def encode(self, batch: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Tiles [B, 3, H, W] in 0..1 -> (patches [B, n, E, h, w], cls [B, n, E], guide [B, 3, H, W]
        [, SAM embeddings [B, D, g, g]]) for n windows; nothing here depends on the prompt."""
        images = tiles_to_device(batch, self.device)
        b, _, height, width = images.shape
        wh, ys = _windows(height, self.config.window, self.config.stride)
        ww, xs = _windows(width, self.config.window, self.config.stride)
        crops = torch.stack([images[:, :, y:y + wh, x:x + ww] for y in ys for x in xs], dim=1)
        normalised = (crops.flatten(0, 1) - self._mean) / self._std
        patches, cls = dense_features(self.clip.visual, normalised)
        n = len(ys) * len(xs)
        features = (patches.reshape(b, n, *patches.shape[1:]), cls.reshape(b, n, -1), images.to(torch.float16))
        if self.sam is None:
            return features
        from ..refine import encode_image

        return features + (torch.cat([encode_image(self.sam, image) for image in images]),)

    @torch.no_grad()
    def decode(self, features) -> np.ndarray:
        from ..refine import sam_refine, upsample_logits

        patches, cls, guide = (f.to(self.device) for f in features[:3])
        guide = guide.float()
        b, n, e, gh, gw = patches.shape
        height, width = guide.shape[-2:]
        wh, ys = _windows(height, self.config.window, self.config.stride)
        ww, xs = _windows(width, self.config.window, self.config.stride)
        feats = F.normalize(patches.float().flatten(0, 1), dim=1)  # [b*n, E, h, w]
        global_ = F.normalize(cls.float().flatten(0, 1), dim=1)  # [b*n, E]
        similarity = torch.einsum("behw,se->bshw", feats, self._text) \
            + self.config.cls_lambda * torch.einsum("be,se->bs", global_, self._text)[..., None, None]
        similarity = similarity * self.config.logit_scale
        logits = class_logits(similarity, self._owner, len(self.class_names))
        windows = torch.stack([guide[:, :, y:y + wh, x:x + ww] for y in ys for x in xs], dim=1).flatten(0, 1)
        logits = upsample_logits(logits, windows, self.config.upsample, **self.config.upsample_options)
        logits = logits.reshape(b, n, -1, wh, ww)
        canvas = torch.zeros(b, logits.shape[2], height, width, device=self.device)
        count = torch.zeros(1, 1, height, width, device=self.device)
        for i, (y, x) in enumerate((y, x) for y in ys for x in xs):
            canvas[:, :, y:y + wh, x:x + ww] += logits[:, i]
            count[:, :, y:y + wh, x:x + ww] += 1
        canvas /= count
        if self.sam is not None:
            embeddings = features[3].to(self.sam.device, torch.float32)
            canvas = torch.stack([sam_refine(canvas[i], guide[i], self.sam, self.config.sam_refine,
                                             embedding=embeddings[i:i + 1], **self.config.sam_options)
                                  for i in range(b)])
        return canvas.cpu().numpy().astype(np.float32)
