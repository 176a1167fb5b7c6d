"""Training-side code: referring-segmentation data (readers, synthetic scenes) for now.

Nothing here imports torch or qgis: the readers and the generator give numpy arrays, so the eval
CLI and tests can use them without a model.
"""
