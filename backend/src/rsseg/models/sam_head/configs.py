"""SAM-head architectures as data (no torch import: the registry imports this module).

`encoder` is the registry id of a SAM component (models/sam/configs.py): its image encoder is loaded
with its weights and frozen; only the decoder (and, for other than 3 bands, a 1x1 band adapter) trains.
`decoder_channels` (C) is the decoder's width; the detail branch on the raw input has C/4 channels at
1/2 and C/2 at 1/4 resolution. `train_adapter`: whether gradients reach the band adapter through the
frozen encoder in training (costs the encoder's activations; only with other than 3 bands).

Inputs: the network takes tiles in the engine's [0, 1] units unless `input_mean` / `input_std` (the
bundle's normalisation) are given, which it undoes before the encoder's own normalisation.
"""

from __future__ import annotations

from typing import Any

_DECODER: dict[str, Any] = {"decoder_channels": 64, "dropout": 0.1, "train_adapter": True}

LITEMEDSAM: dict[str, Any] = {"encoder": "litemedsam", **_DECODER}
SAM_VIT_B: dict[str, Any] = {"encoder": "sam-vit-b", **_DECODER}

# Test-size twins: the encoders' random-weight "-tiny" components and a 16-wide decoder.
LITEMEDSAM_TINY: dict[str, Any] = {**LITEMEDSAM, "encoder": "litemedsam-tiny", "decoder_channels": 16}
SAM_VIT_B_TINY: dict[str, Any] = {**SAM_VIT_B, "encoder": "sam-vit-b-tiny", "decoder_channels": 16}
