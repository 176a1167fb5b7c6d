"""Models: specs as data (spec.py), the registry (registry.py), the engine contract (base.py)."""

from ..execution.tile_model import SIGMOID, SOFTMAX, TileModel
from .registry import MODELS, build_model, get_spec

__all__ = ["MODELS", "SIGMOID", "SOFTMAX", "TileModel", "build_model", "get_spec"]
