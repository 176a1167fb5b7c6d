"""Training of referring models: `rsseg train` and `rsseg eval-refer` (cli.py; see docs/training.md).

Two sides. The data side imports no torch: `data/` (dataset readers with rasterio, COCO RLE with
pycocotools) and `synthetic.py` (the seeded generator) give numpy arrays, so tests and tools can use
them without a model. The torch side is `torch_data.py`, `trainer.py`, `schedule.py`, `checkpoint.py`
and `evaluate.py`; `cli.py` imports torch and the models only inside its verbs, and this package
imports nothing, so `rsseg --help` stays fast. Nothing here imports qgis.
"""
