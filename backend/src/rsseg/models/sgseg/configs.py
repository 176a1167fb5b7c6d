"""SGSeg settings as data (no torch import: the registry imports this module).

    clip               the registry entry of the CLIP whose towers SGSeg starts from (its weights; the text tower
                       stays frozen, the image tower is tuned through small deltas, backbone.py)
    guidance_layers    ViT blocks (0-based) whose token maps guide the decoder, the deeper one first: it guides the
                       coarser of the two up-sampling blocks
    guidance_stages    ConvNeXt stages (0-based) whose maps guide the decoder, coarser first
    dense              "last": CLIP's last block as is; "eva": that block as attention only, softmax(qq^T) +
                       softmax(kk^T), without residual and MLP
    templates          "remote-sensing": "a remote sensing photo of a {}." (one cost channel per class);
                       "imagenet-80": CLIP's 80 templates (80 cost channels per class)
    hidden             width of the cost embedding and the aggregation
    appearance_dim, text_dim   widths of the image (3x3 conv) and text (linear) guidance projections
    layers, heads, swin_window   aggregation layers (two Swin blocks + class attention each), heads, window
    max_classes        class attention pads the class axis with learned tokens up to this count
    decoder_dims, decoder_guidance   the two up-sampling blocks' widths and their guidance widths
    window, stride, global_view   inference: sliding windows (384, overlap 1/3) plus the whole tile at 384
    compensation_weight, pod_scales   the frozen-teacher loss (weight 0.1, POD at scales 1, 2, 4)
    compensation_levels  "dense": the last features only; "intermediate": also the guidance maps, after
                       low-frequency enhancement (the paper's three-level option)
    memory, memory_momentum   the class-prototype memory and its momentum
    backbone_lr_scale  the image tower's deltas learn at this multiple of the learning rate
    open_vocabulary    a bundle of this family takes any class names (bundles/spec.py says so in its description)
"""

from __future__ import annotations

from typing import Any

TEMPLATES = {"remote-sensing": ("a remote sensing photo of a {}.",)}  # "imagenet-80": clip/text.py's templates
IMAGENET_80 = "imagenet-80"

VIT_B_16: dict[str, Any] = {
    "clip": "clip-vit-b-16", "guidance_layers": [7, 3], "guidance_stages": [2, 1], "dense": "last",
    "templates": "remote-sensing", "hidden": 128, "appearance_dim": 128, "text_dim": 128,
    "layers": 2, "heads": 4, "swin_window": 12, "max_classes": 64,
    "decoder_dims": [64, 32], "decoder_guidance": [32, 16],
    "window": 384, "stride": 256, "global_view": True,
    "compensation_weight": 0.1, "pod_scales": [1, 2, 4], "compensation_levels": "dense",
    "memory": True, "memory_momentum": 0.9, "backbone_lr_scale": 0.01, "open_vocabulary": True,
}
VIT_L_14_336: dict[str, Any] = {**VIT_B_16, "clip": "clip-vit-l-14-336", "guidance_layers": [15, 7]}
CONVNEXT_L: dict[str, Any] = {**VIT_B_16, "clip": "clip-convnext-l-laion2b"}

# Test-size twins: the same classes on tiny CLIPs, small widths, 96-px windows (6 x 6 ViT patches).
_TINY: dict[str, Any] = {"hidden": 16, "appearance_dim": 16, "text_dim": 16, "layers": 1, "heads": 2,
                         "swin_window": 4, "max_classes": 8, "decoder_dims": [16, 8], "decoder_guidance": [8, 4],
                         "window": 96, "stride": 64}
VIT_B_16_TINY: dict[str, Any] = {**VIT_B_16, **_TINY, "clip": "clip-vit-b-16-tiny", "guidance_layers": [1, 0]}
CONVNEXT_L_TINY: dict[str, Any] = {**CONVNEXT_L, **_TINY, "clip": "clip-convnext-l-laion2b-tiny", "window": 128,
                                   "stride": 96}
