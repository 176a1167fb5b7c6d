"""SAM 3 behind the engine's InstanceTileModel contract: every object a class list or a short sentence names.

SAM 3 detects the objects one noun phrase names: per query a detection probability, a mask, and per
image a presence probability; an object's score is their product (transformers' post-processing).
- A class list is tiled like other models. Each synonym of a class line ("road, street") is its own
  phrase and its objects belong to that class (an object two synonyms find is kept once). Classes do
  not compete (sigmoid): the logit of a pixel and class is the best score of that class's objects
  covering it, a large negative logit where none does.
- A short sentence is about the whole region (the map view): the engine hands the region over as one
  tile, zero-padded at the bottom / right to a square (objects keep their shape) and cropped back.
  Its objects are ranked by score; `top_k` keeps the best k.
Tiles are padded the same way (tiles are square except on a region smaller than a tile), so the
cached image features (SAM 3's FPN levels and the tile's size) never depend on the prompt: a second
prompt on the same extent runs only the text side, the DETR stages and the mask decoder.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ...execution.host_to_device import tiles_to_device
from ...execution.tile_model import NO_OBJECT_LOGIT, SIGMOID, Instance, instance_score_logit
from ..clip.tokens import class_name_notes, sentence_notes
from ..prompts import display_name, synonyms
from .configs import input_size
from .model import sam3_module
from .text import Sam3Tokenizer

MASK_VALUES = 1 << 24  # upsampled mask values held at once (64 MB of float32), whatever the region's size


@dataclass(frozen=True)
class Sam3Settings:
    """The entry's settings (configs.SETTINGS) and the side of the model's square input."""

    input_size: int
    threshold: float
    instance_floor: float
    mask_threshold: float
    synonym_iou: float

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Sam3Settings":
        return cls(input_size(config["architecture"]), float(config["threshold"]), float(config["instance_floor"]),
                   float(config["mask_threshold"]), float(config["synonym_iou"]))


class Sam3TileModel:
    """InstanceTileModel over a shared Sam3Model; one instance per prompt (a class list or a sentence)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Sam3Tokenizer, prompts: list[str], sentence: bool,
                 device: str, encoder_id: str, settings: Sam3Settings, mean: tuple[float, ...],
                 std: tuple[float, ...], top_k: Optional[int] = None):
        self.model, self.tokenizer, self.device, self.encoder_id = model, tokenizer, device, encoder_id
        self.settings = settings
        self.top_k = top_k
        self.activation = SIGMOID
        self.n_inputs = 3
        self.whole_region = sentence
        self.threshold = settings.threshold
        if sentence:
            self.class_names: tuple[str, ...] = (prompts[0],)
            self.phrases: tuple[tuple[int, str], ...] = ((0, prompts[0]),)
            self.notes = sentence_notes(tokenizer, prompts[0])
        else:
            self.class_names = tuple(display_name(line) for line in prompts)
            self.phrases = tuple((channel, name) for channel, line in enumerate(prompts) for name in synonyms(line))
            self.notes = class_name_notes(tokenizer, [name for _, name in self.phrases], (str,))
        ids, mask = tokenizer.encode([text for _, text in self.phrases])
        with torch.no_grad():  # the prompt's text side, once: [phrases, tokens, width]
            self._text = model.get_text_features(input_ids=ids.to(device), attention_mask=mask.to(device)).pooler_output
        self._text_mask = mask.to(device)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(batch))

    def preprocess(self, batch: np.ndarray) -> torch.Tensor:
        """Tiles [B, 3, h, w] in 0..1 -> the model's input [B, 3, S, S]: padded to a square, resized and normalised
        as Sam3ImageProcessor does (bilinear with antialiasing, mean / std 0.5)."""
        images = tiles_to_device(batch, self.device)
        height, width = images.shape[-2:]
        side = max(height, width)
        square = F.pad(images, (0, side - width, 0, side - height))
        size = (self.settings.input_size,) * 2
        pixels = F.interpolate(square, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (pixels - self._mean) / self._std

    @torch.no_grad()
    def encode(self, batch: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Tiles [B, 3, h, w] in 0..1 -> (SAM 3's FPN levels the decoders read, each [B, C, g, g]; sizes [B, 2])."""
        vision = self.model.get_vision_features(pixel_values=self.preprocess(batch))
        sizes = torch.tensor([batch.shape[-2:]] * len(batch), dtype=torch.int64)
        return (*vision.fpn_hidden_states[:-1], sizes)  # the last (coarsest) level is the video tracker's

    def decode(self, features: Any) -> np.ndarray:
        return self.decode_instances(features)[0]

    @torch.no_grad()
    def decode_instances(self, features: Any) -> tuple[np.ndarray, list[list[Instance]]]:
        """Stacked features of B tiles -> (logits [B, K, h, w], per tile its objects down to the instance floor,
        best first; the engine keeps those over the threshold)."""
        modeling = sam3_module()
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        *levels, sizes = features
        levels = [level.to(self.device) for level in levels]
        count = levels[0].shape[0]
        height, width = (int(v) for v in sizes[0])
        neck = self.model.vision_encoder.neck
        positions = [neck.position_encoding(level.shape, level.device, level.dtype) for level in levels]
        # Sam3Model reads every FPN level but the last, which stays empty here (see encode)
        vision = modeling.Sam3VisionEncoderOutput(fpn_hidden_states=(*levels, None),
                                                  fpn_position_encoding=(*positions, None))
        found: list[list[tuple[int, Instance]]] = [[] for _ in range(count)]
        for phrase, (channel, _) in enumerate(self.phrases):
            text = BaseModelOutputWithPooling(pooler_output=self._text[phrase:phrase + 1].expand(count, -1, -1))
            out = self.model(vision_embeds=vision, text_embeds=text,
                             attention_mask=self._text_mask[phrase:phrase + 1].expand(count, -1))
            scores = (out.pred_logits.float().sigmoid() * out.presence_logits.float().sigmoid()).cpu()
            for tile in range(count):
                found[tile] += [(phrase, obj) for obj in
                                self._objects(out.pred_masks[tile], scores[tile], channel, height, width)]
        logits = np.full((count, len(self.class_names), height, width), NO_OBJECT_LOGIT, np.float32)
        return logits, [self._place(objects, tile_logits) for objects, tile_logits in zip(found, logits)]

    def _objects(self, mask_logits: torch.Tensor, scores: torch.Tensor, channel: int, height: int,
                 width: int) -> list[Instance]:
        """One phrase's objects in one tile, best first: score at least the floor, a non-empty mask, at most
        top_k. Masks are resized as transformers' post-processing does (probabilities, bilinear, then the
        mask threshold), to the padded square and cropped back to the tile."""
        order = torch.argsort(scores, descending=True, stable=True)
        order = order[scores[order] >= self.settings.instance_floor].tolist()
        side = max(height, width)
        chunk = max(1, MASK_VALUES // (side * side))
        objects: list[Instance] = []
        for start in range(0, len(order), chunk):
            picked = order[start:start + chunk]
            probabilities = mask_logits[picked].float().sigmoid()[None]
            resized = F.interpolate(probabilities, size=(side, side), mode="bilinear", align_corners=False)[0]
            masks = (resized[:, :height, :width] > self.settings.mask_threshold).cpu().numpy()
            for query, mask in zip(picked, masks):
                box = _box(mask)
                if box is None:
                    continue
                x0, y0, x1, y1 = box
                objects.append(Instance(channel, float(scores[query]), x0, y0, mask[y0:y1, x0:x1].copy()))
                if self.top_k is not None and len(objects) >= self.top_k:
                    return objects
        return objects

    def _place(self, objects: list[tuple[int, Instance]], logits: np.ndarray) -> list[Instance]:
        """A tile's objects once each (two synonyms of a class may find the same one), ranked per class, their
        scores written into the tile's logits [K, h, w]: a pixel of an object has at least its score's logit."""
        objects = sorted(objects, key=lambda item: -item[1].score)  # stable: ties keep the phrase order
        kept: list[tuple[int, Instance]] = []
        for phrase, obj in objects:
            if not any(other.channel == obj.channel and seen != phrase and _iou(other, obj) >= self.settings.synonym_iou
                       for seen, other in kept):
                kept.append((phrase, obj))
        ranks: dict[int, int] = defaultdict(int)
        instances = []
        for _, obj in kept:
            ranks[obj.channel] += 1
            height, width = obj.mask.shape
            inside = logits[obj.channel, obj.y0:obj.y0 + height, obj.x0:obj.x0 + width]
            inside[obj.mask] = np.maximum(inside[obj.mask], instance_score_logit(obj.score))
            instances.append(replace(obj, rank=ranks[obj.channel]))
        return instances


def _box(mask: np.ndarray) -> Optional[tuple[int, int, int, int]]:
    """The tight box (x0, y0, x1, y1, exclusive ends) of a mask; None when it is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _iou(a: Instance, b: Instance) -> float:
    """Intersection over union of two objects' masks, each cropped to its own box."""
    x0, y0 = max(a.x0, b.x0), max(a.y0, b.y0)
    x1 = min(a.x0 + a.mask.shape[1], b.x0 + b.mask.shape[1])
    y1 = min(a.y0 + a.mask.shape[0], b.y0 + b.mask.shape[0])
    inter = 0
    if x0 < x1 and y0 < y1:
        inter = int((a.mask[y0 - a.y0:y1 - a.y0, x0 - a.x0:x1 - a.x0]
                     & b.mask[y0 - b.y0:y1 - b.y0, x0 - b.x0:x1 - b.x0]).sum())
    union = int(a.mask.sum()) + int(b.mask.sum()) - inter
    return inter / union if union else 0.0
