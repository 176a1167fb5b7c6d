"""The contract between the raster engine and any model.

The engine knows a model only as a callable from a batch of normalised tiles to per-tile logits.
Everything model-specific (weights, text encoding, mean/std, devices) happens behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np

SOFTMAX = "softmax"  # classes compete: one label per pixel
SIGMOID = "sigmoid"  # independent masks, e.g. one referring sentence


@runtime_checkable
class TileModel(Protocol):
    """Optional attributes the engine reads with getattr: `whole_region` (True: the region is one tile,
    for prompts about the whole view), `threshold` (the score under which a pixel is unlabelled when the
    request sets none; SIGMOID models default to 0.5) and `notes` (lines for the result record)."""

    class_names: tuple[str, ...]  # one name per output channel
    activation: str  # SOFTMAX or SIGMOID
    n_inputs: int  # bands the model takes

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """[B, n_inputs, h, w] float32 in [0, 1] (invalid pixels 0) -> [B, K, h, w] float32 logits."""
        ...


@runtime_checkable
class EncodedTileModel(TileModel, Protocol):
    """A TileModel split at its image encoder, so features can be cached and reused across prompts.

    `__call__(batch)` must equal `decode(encode(batch))`. `encoder_id` names the image features
    exactly (model id, architecture config, weights hash): two models with the same id share cached
    features, so the prompt (classes, sentence) must not affect `encode`.
    """

    encoder_id: str

    def encode(self, batch: np.ndarray) -> Any:
        """[B, n_inputs, h, w] -> features with the tile on the first axis: an array, a tensor, or a tuple of
        tensors."""
        ...

    def decode(self, features: Any) -> np.ndarray:
        """Stacked features of B tiles (on the CPU) -> [B, K, h, w] float32 logits."""
        ...


@dataclass(frozen=True)
class Instance:
    """One object a model found in a tile: which output channel, where, and how sure.

    The mask is cropped to the object's box (`x0`, `y0` in tile pixels) so that a tile with a hundred
    small objects does not hold a hundred tile-sized masks.
    """

    channel: int  # 0-based output channel (the class, or 0 for a sentence)
    score: float  # 0..1, the model's confidence in the object (a referring model's ranking score)
    x0: int
    y0: int
    mask: np.ndarray  # bool [h, w]: the object's pixels inside its box
    rank: int = 1  # 1 = best of its channel in its tile


@runtime_checkable
class InstanceTileModel(EncodedTileModel, Protocol):
    """An EncodedTileModel that finds separate objects (SAM 3, zero-shot referring).

    The engine then writes one polygon per instance (with its score and rank) instead of one per
    connected region of the class raster. `decode_instances(features)` returns what `decode(features)`
    returns and, per tile, its instances; the logits must agree with them (a pixel of an instance has at
    least that instance's score on its channel), so the raster and the polygons show the same objects.
    """

    def decode_instances(self, features: Any) -> tuple[np.ndarray, list[list[Instance]]]:
        ...


NO_OBJECT_LOGIT = -20.0  # the logit of a pixel no object of its channel covers (sigmoid: about 2e-9)


def instance_score_logit(score: float) -> float:
    """The logit whose sigmoid is `score`, clipped away from 0 and 1 (a finite logit for any score)."""
    score = min(max(float(score), 1e-6), 1.0 - 1e-6)
    return float(np.log(score / (1.0 - score)))


def model_threshold(model: TileModel, requested: Optional[float]) -> Optional[float]:
    """The score threshold a job applies: the request's, else the model's own default."""
    return requested if requested is not None else getattr(model, "threshold", None)
