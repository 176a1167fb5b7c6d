"""Running a model over tiles: the engine's model contract (TileModel), the tile runner (device,
precision, batches, out-of-memory halving) and the image-feature cache. Below the model families,
which implement TileModel, and the raster engine, which drives the runner."""

from .feature_cache import FeatureCache
from .tile_model import SIGMOID, SOFTMAX, EncodedTileModel, TileModel
from .tile_runner import TileRunner

__all__ = ["SIGMOID", "SOFTMAX", "EncodedTileModel", "FeatureCache", "TileModel", "TileRunner"]
