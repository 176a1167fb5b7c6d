"""Trained-model bundles: a folder holding weights (safetensors, sha256), the architecture config and
everything segmentation needs (classes, colours, bands, normalisation, resolution), so a training run's
output is usable wherever a model id is. format.py writes and reads them, spec.py turns one into a
registry spec, index.py remembers the bundles a user trained ("My models")."""

from .format import BUNDLE_FILE, WEIGHTS_FILE, BundleInfo, is_bundle, load_state, read_bundle, write_bundle

__all__ = ["BUNDLE_FILE", "WEIGHTS_FILE", "BundleInfo", "is_bundle", "load_state", "read_bundle", "write_bundle"]
