"""The contract between the raster engine and any model.

The engine knows a model only as a callable from a batch of normalised tiles to per-tile logits.
Everything model-specific (weights, text encoding, mean/std, devices) happens behind it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

SOFTMAX = "softmax"  # classes compete: one label per pixel
SIGMOID = "sigmoid"  # independent masks, e.g. one referring sentence


@runtime_checkable
class TileModel(Protocol):
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
