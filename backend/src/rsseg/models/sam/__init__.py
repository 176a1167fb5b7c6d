"""The SAM model family: architectures as data (configs.py), one builder (builder.py), TinyViT.

Importing this package imports no torch; `builder.load_sam` does the heavy imports when called.
"""

from .configs import LITEMEDSAM, LITEMEDSAM_TINY, SAM_VIT_B, SAM_VIT_L, SAM_VIT_TINY, preprocess_for

__all__ = ["LITEMEDSAM", "LITEMEDSAM_TINY", "SAM_VIT_B", "SAM_VIT_L", "SAM_VIT_TINY", "preprocess_for"]
