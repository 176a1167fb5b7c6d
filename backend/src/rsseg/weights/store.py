"""Where weight files live: one flat folder, configurable, defaulting to a per-user data dir.

Files are stored under their registry name (e.g. `sam_vit_b_01ec64.pth`), so models that share
a component (SAM for refinement and for RSRefSeg) share one download.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

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


def read_json(name: str) -> dict[str, Any]:
    """A small JSON record in the weights dir; {} when absent or damaged (nothing is trusted then)."""
    try:
        data = json.loads((weights_dir() / name).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(name: str, data: dict[str, Any]) -> None:
    """Replace the record atomically: a reader never sees half of it."""
    folder = weights_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
