"""SAM architectures as data (the open_clip / segment-anything way): one dict per architecture.

A config names the image encoder ("vit": segment_anything's ImageEncoderViT, "tiny_vit": ours),
the input size, the prompt encoder / mask decoder sizes and the pixel normalisation. `build_sam`
turns any of them into a `segment_anything.modeling.Sam`; the registry stores them in
`ModelSpec.config`. This module imports no torch, so the registry can import it for free.

Units: `pixel_mean` / `pixel_std` are in the [0, 1] units the raster engine hands models (SAM's
ImageNet numbers divided by 255), so a Sam built here takes 0..1 images, not 0..255 ones.
"""

from __future__ import annotations

from typing import Any

from ...spec import Preprocess

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # SAM's (123.675, 116.28, 103.53) / 255
IMAGENET_STD = (0.229, 0.224, 0.225)  # SAM's (58.395, 57.12, 57.375) / 255

# SAM's mask decoder as released (segment_anything/build_sam.py); LiteMedSAM keeps it unchanged.
SAM_DECODER = {"depth": 2, "mlp_dim": 2048, "num_heads": 8, "num_multimask_outputs": 3,
               "iou_head_depth": 3, "iou_head_hidden_dim": 256}


def _vit(embed_dim: int, depth: int, num_heads: int, global_attn_indexes: tuple[int, ...],
         window_size: int = 14, patch_size: int = 16) -> dict[str, Any]:
    return {"kind": "vit", "embed_dim": embed_dim, "depth": depth, "num_heads": num_heads,
            "global_attn_indexes": global_attn_indexes, "window_size": window_size, "patch_size": patch_size}


SAM_VIT_B: dict[str, Any] = {
    "encoder": _vit(768, 12, 12, (2, 5, 8, 11)),
    "image_size": 1024, "prompt_embed_dim": 256, "mask_in_chans": 16, "decoder": SAM_DECODER,
    "pixel_mean": IMAGENET_MEAN, "pixel_std": IMAGENET_STD,
}

SAM_VIT_L: dict[str, Any] = {**SAM_VIT_B, "encoder": _vit(1024, 24, 16, (5, 11, 17, 23))}
SAM_VIT_H: dict[str, Any] = {**SAM_VIT_B, "encoder": _vit(1280, 32, 16, (7, 15, 23, 31))}  # segment_anything's vit_h

# Same classes as SAM ViT-B/L/H at test size: 2 blocks, 96 wide, 256² input (16x16 embeddings).
# mask_in_chans stays SAM's 16: the mask path starts Conv(1 -> mask_in_chans/4) + LayerNorm2d, and
# with 8 (2 channels) that norm returns only the sign of its input, with zero gradient.
SAM_VIT_TINY: dict[str, Any] = {
    "encoder": _vit(96, 2, 3, (1,), window_size=8),
    "image_size": 256, "prompt_embed_dim": 64, "mask_in_chans": 16,
    "decoder": {"depth": 1, "mlp_dim": 128, "num_heads": 4, "num_multimask_outputs": 3,
                "iou_head_depth": 2, "iou_head_hidden_dim": 32},
    "pixel_mean": IMAGENET_MEAN, "pixel_std": IMAGENET_STD,
}

# LiteMedSAM (MedSAM's distilled model): MobileSAM's TinyViT with a stride-1 stem, so a 256²
# input gives 64x64 embeddings (stride 4, not SAM's 16), then SAM's own prompt encoder and mask
# decoder. Trained on 0..1 images with no mean/std.
LITEMEDSAM: dict[str, Any] = {
    "encoder": {"kind": "tiny_vit", "embed_dims": (64, 128, 160, 320), "depths": (2, 2, 6, 2),
                "num_heads": (2, 4, 5, 10), "window_sizes": (7, 7, 14, 7), "stem_stride": 1,
                "merge_strides": (2, 2, 1), "mlp_ratio": 4.0, "mbconv_expand_ratio": 4.0},
    "image_size": 256, "prompt_embed_dim": 256, "mask_in_chans": 16, "decoder": SAM_DECODER,
    "pixel_mean": (0.0, 0.0, 0.0), "pixel_std": (1.0, 1.0, 1.0),
}

LITEMEDSAM_TINY: dict[str, Any] = {
    **SAM_VIT_TINY,
    "encoder": {"kind": "tiny_vit", "embed_dims": (8, 16, 24, 32), "depths": (1, 1, 1, 1),
                "num_heads": (1, 2, 3, 4), "window_sizes": (7, 7, 14, 7), "stem_stride": 1,
                "merge_strides": (2, 2, 1), "mlp_ratio": 2.0, "mbconv_expand_ratio": 2.0},
    "pixel_mean": (0.0, 0.0, 0.0), "pixel_std": (1.0, 1.0, 1.0),
}


def encoder_stride(config: dict[str, Any]) -> int:
    """Input pixels per embedding cell."""
    enc = config["encoder"]
    if enc["kind"] == "vit":
        return int(enc["patch_size"])
    stride = int(enc.get("stem_stride", 4))
    for s in enc.get("merge_strides", (2, 2, 1)):
        stride *= int(s)
    return stride


def embedding_size(config: dict[str, Any]) -> int:
    """Side of the square image-embedding grid (the prompt encoder's `image_embedding_size`)."""
    return int(config["image_size"]) // encoder_stride(config)


def preprocess_for(config: dict[str, Any]) -> Preprocess:
    """The registry's Preprocess, derived from the config so the two cannot disagree."""
    return Preprocess(bands=3, mean=tuple(config["pixel_mean"]), std=tuple(config["pixel_std"]),
                      input_size=int(config["image_size"]))
