"""Tiny CLIP architectures for SGSeg tests, as data (no torch import).

TINY_CONVNEXT_CLIP is an open_clip CLIP arch dict of the same classes as convnext_large_d_320 (a timm ConvNeXt
image tower, no global pool, an MLP projection head) at test size: timm's convnext_atto (3.4 M parameters), built
with random weights (timm_model_pretrained False: nothing is downloaded). Its text tower is models/clip/configs.py
TINY_CLIP's, spelled out so that this module imports nothing.
"""

from __future__ import annotations

from typing import Any

TINY_CONVNEXT_CLIP: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"timm_model_name": "convnext_atto", "timm_model_pretrained": False, "timm_pool": "",
                   "timm_proj": "mlp", "timm_drop": 0.0, "image_size": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
