"""Weight files: where they live, download / import / verify, and safe loading."""

from .load import load_checkpoint
from .store import ENV_DIR, model_weight_paths, weight_path, weights_dir

__all__ = ["ENV_DIR", "load_checkpoint", "model_weight_paths", "weight_path", "weights_dir"]
