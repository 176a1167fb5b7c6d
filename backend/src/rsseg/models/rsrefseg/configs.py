"""RSRefSeg architectures as data (no torch import, so the registry can read them for free).

A config names the vision-language encoder (an open_clip model name, or an explicit architecture
for test twins), the SAM config (models/sam/configs.py), the AttnPrompter and the LoRA settings.
"""

from __future__ import annotations

from typing import Any

from ..clip import configs as clip_configs
from ..sam import configs as sam_configs

SIGLIP_MEAN = (0.5, 0.5, 0.5)  # SigLIP's normalisation, in the engine's 0..1 units
SIGLIP_STD = (0.5, 0.5, 0.5)

# The authors' hyper-parameters: r=16, alpha=16, dropout 0.1 on SAM's image encoder (qkv, proj,
# mlp, neck), the CLIP vision attention and the CLIP text attention + projection (see lora.py).
LORA = {"r": 16, "alpha": 16, "dropout": 0.1}

# Two stride-2 blocks take SigLIP-384's 27x27 grid to 7x7: 49 sparse prompt tokens (the code's choice).
PROMPTER = {"down_blocks": 2, "norm": "batch"}

# The reference: SigLIP so400m-patch14-384 for both towers and SAM ViT-B at 1024x1024, on the
# registry's `siglip-so400m-14-384` and `sam-vit-b` files.
REFERENCE: dict[str, Any] = {
    "clip": clip_configs.SIGLIP_SO400M_384,
    "clip_weights": "siglip-so400m-14-384", "sam_weights": "sam-vit-b",
    "clip_mean": SIGLIP_MEAN, "clip_std": SIGLIP_STD,
    "sam": sam_configs.SAM_VIT_B,
    "prompter": PROMPTER,
    "lora": LORA,
    "bias_init": -10.0,  # only used when the CLIP has no logit bias (SigLIP has one)
    "dense_prompt": True,
    "bce_weight": 5.0, "dice_weight": 0.0,
}

# RSRefSeg on weights the registry can download with a checksum: OpenAI CLIP ViT-B/16 for both
# towers (224 px input: a 14x14 grid; one stride-2 block gives 7x7 = 49 sparse prompt tokens, the
# count of the reference code) and SAM ViT-B at 1024x1024. The base weights are the registry's
# `clip-vit-b-16` and `sam-vit-b` files; the trained parts come from an `rsseg train` checkpoint.
CLIP_B16_SAM_B: dict[str, Any] = {
    "clip": {"open_clip_model": "ViT-B-16-quickgelu"},
    "clip_weights": "clip-vit-b-16", "sam_weights": "sam-vit-b",
    "clip_mean": clip_configs.OPENAI_MEAN, "clip_std": clip_configs.OPENAI_STD,
    "sam": sam_configs.SAM_VIT_B,
    "prompter": {**PROMPTER, "down_blocks": 1},
    "lora": LORA,
    "bias_init": -10.0,  # CLIP has no logit bias: the prompter learns one
    "dense_prompt": True,
    "bce_weight": 5.0, "dice_weight": 0.0,
}

# Test twin: the same classes at test size. The CLIP is a CustomTextCLIP (text tower with a Linear
# projection, like SigLIP's) built from the tiny CLIP; it has no logit bias, so the learnable
# fallback bias is exercised. 224 px CLIP input (14x14 grid), 256 px tiny SAM (16x16 embeddings).
TINY_ARCHITECTURE: dict[str, Any] = {
    **clip_configs.TINY_CLIP,
    "text_cfg": {**clip_configs.TINY_CLIP["text_cfg"], "proj_bias": True},
}

TINY: dict[str, Any] = {
    "clip": {"architecture": TINY_ARCHITECTURE, "custom_text": True, "tokenizer": clip_configs.TINY_TOKENIZER},
    "clip_mean": clip_configs.OPENAI_MEAN, "clip_std": clip_configs.OPENAI_STD,
    "sam": sam_configs.SAM_VIT_TINY,
    "prompter": PROMPTER,
    "lora": LORA,
    "bias_init": -10.0,
    "dense_prompt": True,
    "bce_weight": 5.0, "dice_weight": 0.0,
}

# The learning-test configuration (docs/training.md, "The learning test"): TINY's classes and
# sizes, changed only where a random-weight, frozen-tower model could not learn in CPU minutes:
# - SAM's mask-path downscaler: `mask_in_chans` 8 gives its first LayerNorm2d 2 channels, and a
#   LayerNorm over 2 values outputs only their sign (+-1), so the dense prompt (the global
#   activation logits) had a zero gradient and carried no text; 16 gives it 4 channels (SAM ViT-B's).
#   This is the decisive change (ablations in docs/training.md); the others add a little or nothing.
# - the fallback logit bias starts at 0: at -10 every sigmoid(s<V,T> + b) gate sits at ~5e-5, so
#   the local and global activations pass (and receive) almost nothing;
# - the token embedding and CLIP's visual projection are trained in full (extra_trainable): with
#   random frozen towers and LoRA's B starting at zero, the words otherwise reach the joint space
#   only through rank-16 updates of a random text tower;
# - SAM's mask decoder has 2 two-way blocks (SAM's own depth) instead of 1, and no LoRA dropout.
_LEARNING_DECODER = {**sam_configs.SAM_VIT_TINY["decoder"], "depth": 2}
LEARNING: dict[str, Any] = {
    **TINY,
    "sam": {**sam_configs.SAM_VIT_TINY, "decoder": _LEARNING_DECODER},
    "lora": {**LORA, "dropout": 0.0},
    "extra_trainable": ("clip.text.token_embedding", "clip.visual.proj"),
    "bias_init": 0.0,
    "dice_weight": 1.0,
}

TINY_SEED = 0  # the registry's random-weight test model is reproducible


def prompt_grid(grid: int, down_blocks: int) -> int:
    """Side of the prompter's output grid: each stride-2 3x3 conv (padding 1) halves it, rounding up."""
    for _ in range(down_blocks):
        grid = (grid - 1) // 2 + 1
    return grid
