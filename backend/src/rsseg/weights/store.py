"""Where weight files live: one flat folder, configurable, defaulting to a per-user data dir.

Files are stored under their registry name (e.g. `sam_vit_b_01ec64.pth`), so models that share
a component (SAM for refinement and for RSRefSeg) share one download.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..models.spec import ModelSpec, WeightFile

ENV_DIR = "RSSEG_WEIGHTS_DIR"


def weights_dir() -> Path:
    """$RSSEG_WEIGHTS_DIR, else the platform's per-user data dir (e.g. ~/.local/share/rsseg/weights)."""
    configured = os.environ.get(ENV_DIR)
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("rsseg", appauthor=False)) / "weights"


def weight_path(weight: WeightFile) -> Path:
    return weights_dir() / weight.name


def model_weight_paths(spec: ModelSpec) -> dict[str, Path]:
    return {w.name: weight_path(w) for w in spec.weights}
