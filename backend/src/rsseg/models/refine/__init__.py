"""Refinement of coarse class logits into sharp per-pixel logits (for the training-free
open-vocabulary segmenter, whose CLIP logits live on a 1/16 grid). See docs/refinement.md.

- `upsample_logits(coarse, guide, method)`: "bilinear", "guided" (guided filter) or "jbu"
  (joint bilateral upsampling), torch only.
- `sam_refine(logits, image, sam, mode)`: "vote" (SAM regions average their logits) or "peaks"
  (confident regions prompt SAM); `encode_image` to compute the SAM embedding once.

Importing this package imports torch but not segment_anything (a SAM object is passed in).
"""

from .sam_refine import MODES, encode_image, sam_refine
from .upsample import METHODS, upsample_logits

__all__ = ["METHODS", "MODES", "encode_image", "sam_refine", "upsample_logits"]
