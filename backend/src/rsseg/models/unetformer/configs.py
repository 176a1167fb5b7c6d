"""UNetFormer architectures as data (no torch import: the registry imports this module).

`encoder` is a timm model name built with `features_only=True, out_indices=(1, 2, 3, 4)`;
`encoder_kwargs` go to timm's constructor (the tiny twin narrows ResNet-18's stages with them).
`pretrained` (set by the registry entry, not here) names a registry component whose ImageNet weights
initialise the encoder before training.
"""

from __future__ import annotations

from typing import Any

# GeoSeg's UNetFormer as published: decode width 64, 8x8 windows, 8 heads, auxiliary head in training.
R18: dict[str, Any] = {"encoder": "resnet18", "decode_channels": 64, "window_size": 8, "dropout": 0.1,
                       "num_heads": 8, "aux": True}

# The same classes at test size: a ResNet-18 with 16/32/64/128-wide stages (timm's `channels`),
# 16-wide decoder, 2 heads, 4x4 windows.
TINY: dict[str, Any] = {"encoder": "resnet18", "encoder_kwargs": {"channels": [16, 32, 64, 128]},
                        "decode_channels": 16, "window_size": 4, "dropout": 0.1, "num_heads": 2, "aux": True}

# The encoder components (registry task "component"): a timm classifier whose weights, less the
# classifier, initialise UNetFormer's encoder. The tiny twin has TINY's encoder, random weights.
RESNET18: dict[str, Any] = {"encoder": "resnet18"}
RESNET18_TINY: dict[str, Any] = {"encoder": "resnet18", "encoder_kwargs": TINY["encoder_kwargs"]}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
