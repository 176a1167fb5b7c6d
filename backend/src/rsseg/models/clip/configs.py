"""CLIP architectures and open-vocabulary settings as data (no torch import).

Real models name an open_clip architecture (built without weights, then loaded from the registry's
checkpoint); tiny test twins spell out a small open_clip CLIP of the same classes.
"""

from __future__ import annotations

OPEN_VOCAB = {"window": 224, "stride": 112, "cls_lambda": -0.3, "logit_scale": 50.0, "upsample": "jbu",
              "sam_refine": "off"}  # SAM refinement is opt-in (slow on CPU); docs/refinement.md

# OpenAI CLIP means/stds in 0..1 units (the engine hands models tiles stretched to 0..1).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

TINY_CLIP = {  # a 2-block, 64-wide ViT-B/16-shaped CLIP: same classes as the real ones, random weights
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "patch_size": 16, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_TOKENIZER = "ViT-B-16"  # CLIP's BPE tokenizer, bundled with open_clip (no download)

# SigLIP so400m/14 at 384 px (RSRefSeg's reference encoder). Its tokenizer is a Hugging Face one:
# the registry downloads its files with the weights into this folder of the weights dir, and it is
# loaded from there (never fetched at run time).
SIGLIP_SO400M_384 = {"open_clip_model": "ViT-SO400M-14-SigLIP-384", "tokenizer_dir": "ViT-SO400M-14-SigLIP-384"}
