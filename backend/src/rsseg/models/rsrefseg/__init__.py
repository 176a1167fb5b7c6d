"""RSRefSeg: referring segmentation from a CLIP-family encoder prompting SAM (DESIGN.md, Models 1).

Torch-free at import: `configs` is data; the model lives in `model`, `prompter`, `lora`, `tile_model`.
"""
