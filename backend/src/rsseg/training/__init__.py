"""Training: `rsseg train` and `rsseg eval-refer` (cli.py; see docs/training.md).

`base.py` is the loop every model family shares (`BaseTrainer`: optimizer, schedule.py's warm-up and
cosine, AMP, accumulation, clipping, seeding, validation hooks, progress, cancel, checkpoints and
exact resume, with batches.py's resumable batch order); a family subclasses it and registers the
subclass by family name (registry.py), e.g. `rsrefseg.py` (`RSRefSegTrainer`, `build_trainable`).
`torch_data.py` and `evaluate.py` are RSRefSeg's dataset wrapper and referring evaluation. The data
itself (readers, synthetic sets) is `rsseg.datasets`, numpy only. `cli.py` imports torch and the
models only inside its verbs, and this package imports nothing, so `rsseg --help` stays fast.
Nothing here imports qgis.
"""
