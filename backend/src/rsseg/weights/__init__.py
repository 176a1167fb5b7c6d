"""Weight files: where they live, download / import / verify, and safe loading."""

from .download import download_model, download_weight
from .importer import import_weight
from .load import checked_copy, installed_path, load_checkpoint, load_state_strict
from .store import ENV_DIR, ENV_MIRROR, model_weight_paths, weight_path, weights_dir
from .verify import WeightState, checked_paths, sha256_file, verify_file, verify_model, weight_status, weights_present

__all__ = ["ENV_DIR", "ENV_MIRROR", "WeightState", "checked_copy", "checked_paths", "download_model",
           "download_weight", "import_weight", "installed_path", "load_checkpoint", "load_state_strict",
           "model_weight_paths", "sha256_file", "verify_file", "verify_model", "weight_path", "weight_status",
           "weights_dir", "weights_present"]
