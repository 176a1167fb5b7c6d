"""Training-free open-vocabulary segmentation with CLIP (the recipe of DESIGN.md section 2).

Per tile: sliding windows (224, stride 112 by default) -> dense CLIP patch features
(models/clip/dense.py) -> logits = 50 * (patch . T) + lambda * 50 * (cls . T) with lambda = -0.3
(CLS-bias removal), for the L2-normalised patch, CLS and class-name embeddings T -> the best synonym per class ->
coarse logits upsampled to the window (bilinear, or image-guided) and averaged where windows
overlap. Split at the image encoder (EncodedTileModel), so a second prompt on the same extent
reuses the cached patch features and runs only the text tower and this decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...raster.tiling import tile_starts
from .dense import dense_features
from ..prompts import display_name
from .text import class_embeddings, class_logits


@dataclass(frozen=True)
class OpenVocabConfig:
    window: int = 224  # CLIP's training size: the sliding window in (processing) pixels
    stride: int = 112
    cls_lambda: float = -0.3  # logits + lambda * (cls logits) remove the global bias every patch shares
    logit_scale: float = 50.0
    upsample: str = "bilinear"  # or "guided": the tile image guides the upsampled logits

    @classmethod
    def from_dict(cls, data: dict) -> "OpenVocabConfig":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _windows(length: int, window: int, stride: int) -> tuple[int, list[int]]:
    size = min(window, length)
    return size, tile_starts(length, size, max(0, size - stride))


class OpenVocabCLIP:
    """EncodedTileModel over an open_clip CLIP; one instance per prompt (the CLIP itself is shared)."""

    def __init__(self, clip, tokenizer, prompts: list[str], activation: str, *, mean, std,
                 config: OpenVocabConfig, device: str, encoder_id: str):
        self.clip, self.device, self.config = clip, device, config
        self.class_names = tuple(display_name(p) for p in prompts)
        self.activation = activation
        self.n_inputs = 3
        self.encoder_id = encoder_id
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._text, self._owner = class_embeddings(clip, tokenizer, list(prompts), device=device)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(batch))

    @torch.no_grad()
    def encode(self, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tiles [B, 3, H, W] in 0..1 -> (patches [B, n, E, h, w], cls [B, n, E], guide [B, 3, H, W]) for n windows."""
        images = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, torch.float32)
        b, _, height, width = images.shape
        wh, ys = _windows(height, self.config.window, self.config.stride)
        ww, xs = _windows(width, self.config.window, self.config.stride)
        crops = torch.stack([images[:, :, y:y + wh, x:x + ww] for y in ys for x in xs], dim=1)
        normalised = (crops.flatten(0, 1) - self._mean) / self._std
        patches, cls = dense_features(self.clip.visual, normalised)
        n = len(ys) * len(xs)
        return (patches.reshape(b, n, *patches.shape[1:]), cls.reshape(b, n, -1),
                images.to(torch.float16))

    @torch.no_grad()
    def decode(self, features) -> np.ndarray:
        patches, cls, guide = (f.to(self.device) for f in features)
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
        logits = F.interpolate(logits, size=(wh, ww), mode="bilinear", align_corners=False)
        logits = logits.reshape(b, n, -1, wh, ww)
        canvas = torch.zeros(b, logits.shape[2], height, width, device=self.device)
        count = torch.zeros(1, 1, height, width, device=self.device)
        for i, (y, x) in enumerate((y, x) for y in ys for x in xs):
            canvas[:, :, y:y + wh, x:x + ww] += logits[:, i]
            count[:, :, y:y + wh, x:x + ww] += 1
        canvas /= count
        if self.config.upsample == "guided":
            from ..refine import upsample_logits

            canvas = upsample_logits(canvas, guide.float(), method="guided")
        return canvas.cpu().numpy().astype(np.float32)
