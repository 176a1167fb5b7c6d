"""RFM-Seg settings as data (no torch import: the registry imports this module).

    host_family  the family of the trained bundle it fuses into (its weights are frozen and copied into the
                 RFM-Seg bundle, so the result does not depend on the host's folder afterwards)
    host_entry   the registry entry of the host architecture parameter counts assume (`rsseg models`)
    clip         the registry entry of the frozen RemoteCLIP: a ResNet CLIP (RN50) or a ViT CLIP (ViT-B/32)
    window       VL-map window side on CLIP's 1/32 map (CLIP RN50's attention pool sees 7 x 7)
    temperature  the window-to-prompt logit scale before the softmax (CLIP's 100)
    vote         "hard": each window votes for its best prompt's class and a pixel takes the class with most
                 votes (the published method); "soft": windows add their class probabilities and a pixel
                 keeps the mean distribution (differentiable in the CLIP features; docs/rfm-seg.md compares)
    kernel       the connectors' separable-convolution kernel (8, as GeoSeg's global-local attention)
    prompts      class name -> VL-map prompts; classes not listed take prompts.py's dataset sets, then templates
    lookahead    wrap AdamW in Lookahead (k 6, alpha 0.5, as the public schedules)
"""

from __future__ import annotations

from typing import Any

R18_RN50: dict[str, Any] = {"host_family": "unetformer", "host_entry": "unetformer-r18", "clip": "remoteclip-rn50",
                            "window": 7,
                            "temperature": 100.0, "vote": "hard", "kernel": 8, "mlp_ratio": 4, "lookahead": False}
TINY: dict[str, Any] = {**R18_RN50, "host_entry": "unetformer-r18-tiny", "clip": "remoteclip-rn50-tiny"}
# The ViT option: RemoteCLIP ViT-B/32 (its 7 x 7-patch windows are RN50's 7 x 7 layer4 windows).
R18_VIT_B_32: dict[str, Any] = {**R18_RN50, "clip": "remoteclip-vit-b-32"}
VIT_TINY: dict[str, Any] = {**TINY, "clip": "remoteclip-vit-b-32-tiny"}

# A test-size CLIP with RN50's classes: a ModifiedResNet one bottleneck per stage, 16 wide (stem 16 at 1/4,
# bottlenecks 32 / 64 / 128 at 1/8 / 1/16 / 1/32: the widths of the tiny UNetFormer host), and a 1-layer text
# tower, random seeded weights.
TINY_RN_CLIP: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": [1, 1, 1, 1], "width": 16, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
