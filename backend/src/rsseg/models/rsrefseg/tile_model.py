"""RSRefSeg behind the engine's EncodedTileModel contract: one referring sentence, sigmoid logits.

A sentence is about the whole region (the map view), so the engine hands this model the region as
one tile (`whole_region`). A non-square region is zero-padded at the bottom / right to a square
before the model resizes it to its encoders' inputs (as SAM pads, so objects keep their shape),
and the logits are cropped back. The cached features are the image-only parts (CLIP patch
tokens, SAM embeddings) plus the tile's size, so a second sentence on the same extent reuses them
and runs only the text side and SAM's decoder.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...execution.host_to_device import tiles_to_device
from ...execution.tile_model import SIGMOID
from ..clip.tokens import sentence_notes
from .model import ImageFeatures, RSRefSeg


class RSRefSegTileModel:
    """EncodedTileModel over a shared RSRefSeg; one instance per sentence."""

    def __init__(self, model: RSRefSeg, sentence: str, device: str, encoder_id: str):
        self.model, self.device, self.encoder_id = model, device, encoder_id
        self.class_names = (sentence,)
        self.activation = SIGMOID
        self.n_inputs = 3
        self.whole_region = True
        with torch.no_grad():
            self._text = model.tokenize([sentence]).to(device)
        # the text encoder's context holds a few dozen tokens: say when the sentence did not fit (result notes)
        self.notes = sentence_notes(model.tokenizer, sentence)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(batch))

    @torch.no_grad()
    def encode(self, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tiles [B, 3, H, W] in 0..1 -> (CLIP tokens [B, E, h, w], SAM embeddings [B, C, g, g], sizes [B, 2])."""
        images = tiles_to_device(batch, self.device)
        height, width = images.shape[-2:]
        side = max(height, width)
        square = F.pad(images, (0, side - width, 0, side - height))
        clip_tokens, embeddings = self.model.encode(square)
        sizes = torch.tensor([[height, width]] * images.shape[0], dtype=torch.int64)
        return clip_tokens, embeddings, sizes

    @torch.no_grad()
    def decode(self, features) -> np.ndarray:
        clip_tokens, embeddings, sizes = features
        text = self._text.expand(clip_tokens.shape[0], -1)
        height, width = (int(s) for s in sizes[0])
        side = max(height, width)
        logits = self.model.decode(ImageFeatures(clip_tokens.to(self.device), embeddings.to(self.device)),
                                   text, (side, side))
        return logits[..., :height, :width].float().cpu().numpy().astype(np.float32)
