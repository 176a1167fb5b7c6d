"""Datasets as numpy arrays, for training and evaluation alike (no torch, no models).

- `referring/`: the referring-segmentation sample record, its readers (RRSIS-D jsonl and refer
  releases, RefSegRS, the plain folder layout), COCO RLE, and `referring.synthetic`, the seeded
  synthetic referring scenes (docs/referring-data.md).
- `semantic.py`: the semantic benchmark layouts `rsseg eval` reads (LoveDA, ISPRS, OpenEarthMap,
  folder) and their label codings (docs/eval.md).
- `chips.py`: fixed-size (image, label, window) chips from an image raster and a label raster on
  one grid, for training on georeferenced rasters.
- `labels.py`, `blocks.py`, `layer_chips.py`: chips from a raster + polygon layer (docs/training-from-layers.md).

Torch wrappers stay with their users (training/torch_data.py). The engine benchmark's rasters
(bench/synthetic.py) are not a dataset and stay in bench. This package imports nothing, so each
module costs only what it uses (rasterio; pycocotools for the referring readers).
"""
