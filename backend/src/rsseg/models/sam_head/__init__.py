"""A light trainable decoder on a frozen SAM-family image encoder (LiteMedSAM, SAM ViT-B), trained on the
user's own layers (docs/models-trainable.md).

Importing this package imports no torch: configs.py is data; model.py builds the network.
"""

from .configs import LITEMEDSAM, LITEMEDSAM_TINY, SAM_VIT_B, SAM_VIT_B_TINY

__all__ = ["LITEMEDSAM", "LITEMEDSAM_TINY", "SAM_VIT_B", "SAM_VIT_B_TINY"]
