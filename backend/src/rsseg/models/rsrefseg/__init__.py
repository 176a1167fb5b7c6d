"""RSRefSeg: referring segmentation from a CLIP-family encoder prompting SAM (docs/rsrefseg.md).

Torch-free at import: `configs` is data; the model lives in `model`, `prompter`, `lora`, `tile_model`.
"""
