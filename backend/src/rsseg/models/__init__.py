"""Models: the registry of specs (registry.py, data), the factory that builds them (factory.py), and
one package per family, each registering its builders in its family.py."""

from ..execution.tile_model import SIGMOID, SOFTMAX, TileModel
from .factory import build_model, load_component
from .registry import MODELS, get_spec

__all__ = ["MODELS", "SIGMOID", "SOFTMAX", "TileModel", "build_model", "get_spec", "load_component"]
