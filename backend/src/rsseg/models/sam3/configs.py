"""SAM 3 architectures and settings as data (no torch import, so the registry can read them for free).

The real architecture is Meta's SAM 3 image detector as transformers' Sam3Model builds it: the values
below are transformers' Sam3Config defaults, which are facebook/sam3's config (restated so the registry
pins them; tests/backend/test_sam3.py checks they still agree). The tiny twin is the same classes at
test size, random seeded weights. Scores follow transformers' post-processing: the query's detection
probability times the image's presence probability.
"""

from __future__ import annotations

from typing import Any

HUB_REPO = "facebook/sam3"
HUB_REVISION = "3c879f39826c281e95690f02c7821c4de09afae7"  # the commit the registry's files are pinned at
WEIGHTS_DIR = "sam3"  # folder in the weights dir: model.safetensors and the tokenizer's vocab.json / merges.txt

MEAN = (0.5, 0.5, 0.5)  # Sam3ImageProcessor's mean / std (ImageNet "standard"), in the engine's 0..1 units
STD = (0.5, 0.5, 0.5)

SETTINGS: dict[str, Any] = {
    "context_length": 32,  # Sam3Processor pads text to 32 tokens; the text encoder has 32 positions
    "threshold": 0.5,  # SAM 3's detection threshold: the engine's default when a request sets none
    "instance_floor": 0.05,  # instances are returned down to this score; the engine applies the threshold
    "mask_threshold": 0.5,  # a pixel belongs to an object where its mask probability exceeds this
    # a class's synonyms are prompted one by one: an object found by two of them (mask IoU at least this) is
    # kept once, with the better score
    "synonym_iou": 0.5,
}

ARCHITECTURE: dict[str, Any] = {  # Sam3Config(**ARCHITECTURE): ViT-L/14 at 1008 px, CLIP text 24x1024, DETR 6+6
    "vision_config": {
        "backbone_config": {"model_type": "sam3_vit_model", "hidden_size": 1024, "intermediate_size": 4736,
                            "num_hidden_layers": 32, "num_attention_heads": 16, "image_size": 1008, "patch_size": 14,
                            "window_size": 24, "global_attn_indexes": [7, 15, 23, 31], "pretrain_image_size": 336},
        "fpn_hidden_size": 256, "backbone_feature_sizes": [[288, 288], [144, 144], [72, 72]],
        "scale_factors": [4.0, 2.0, 1.0, 0.5],
    },
    "text_config": {"model_type": "clip_text_model", "vocab_size": 49408, "hidden_size": 1024,
                    "intermediate_size": 4096, "projection_dim": 512, "num_hidden_layers": 24,
                    "num_attention_heads": 16, "max_position_embeddings": 32, "hidden_act": "gelu"},
    "geometry_encoder_config": {"hidden_size": 256, "num_layers": 3, "num_attention_heads": 8,
                                "intermediate_size": 2048},
    "detr_encoder_config": {"hidden_size": 256, "num_layers": 6, "num_attention_heads": 8, "intermediate_size": 2048},
    "detr_decoder_config": {"hidden_size": 256, "num_layers": 6, "num_attention_heads": 8, "intermediate_size": 2048,
                            "num_queries": 200},
    "mask_decoder_config": {"hidden_size": 256, "num_upsampling_stages": 3, "num_attention_heads": 8},
}

TINY_SEED = 0  # the tiny twin is random but reproducible: the same id gives the same model
TINY_ARCHITECTURE: dict[str, Any] = {  # 2-block 32-wide ViT at 252 px (18x18 patches, 9-patch windows), 20 queries
    "vision_config": {
        "backbone_config": {"model_type": "sam3_vit_model", "hidden_size": 32, "intermediate_size": 64,
                            "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 252, "patch_size": 14,
                            "window_size": 9, "global_attn_indexes": [1], "pretrain_image_size": 126},
        "fpn_hidden_size": 32, "backbone_feature_sizes": [[72, 72], [36, 36], [18, 18]],
        "scale_factors": [4.0, 2.0, 1.0, 0.5],
    },
    "text_config": {"model_type": "clip_text_model", "vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64,
                    "projection_dim": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                    "max_position_embeddings": 32, "hidden_act": "gelu"},
    "geometry_encoder_config": {"hidden_size": 32, "num_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
    "detr_encoder_config": {"hidden_size": 32, "num_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
    "detr_decoder_config": {"hidden_size": 32, "num_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                            "num_queries": 20},
    "mask_decoder_config": {"hidden_size": 32, "num_upsampling_stages": 3, "num_attention_heads": 2},
}


def input_size(architecture: dict[str, Any]) -> int:
    """The side of the square image the architecture takes (its ViT's global attention is built for it)."""
    return int(architecture["vision_config"]["backbone_config"]["image_size"])


# The real model reads its weights and the hub's tokenizer files from WEIGHTS_DIR (the registry's file names);
# the tiny twin has no files: random seeded weights, and the same CLIP BPE vocabulary bundled with open_clip.
SAM3: dict[str, Any] = {"architecture": ARCHITECTURE, **SETTINGS}
SAM3_TINY: dict[str, Any] = {"architecture": TINY_ARCHITECTURE, "seed": TINY_SEED, **SETTINGS}
