"""SAM 3: promptable concept segmentation (every object a noun phrase names) through transformers'
Sam3Model (docs/zero-shot.md). Registers the "sam3" builder.

Torch-free at import: `configs` is data; the model lives in `model`, `text` and `tile_model`.
"""
