"""The bundles a user trained or added ("My models"): a small list of folders in the models folder.

Why a list of paths rather than one folder of bundles: a run writes its bundle where the user asked
(beside the project, on a shared drive); remembering the path lists it without copying weights.
Bundles inside the models folder itself are listed too, so copying one there installs it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..jsonfile import read_json_file, write_json_file
from .format import is_bundle
from .spec import bundle_id

ENV_MODELS_DIR = "RSSEG_MODELS_DIR"
INDEX_FILE = "bundles.json"


def models_dir() -> Path:
    """$RSSEG_MODELS_DIR, else the platform's per-user data dir (e.g. ~/.local/share/rsseg/models)."""
    configured = os.environ.get(ENV_MODELS_DIR)
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("rsseg", appauthor=False)) / "models"


def _remembered() -> list[str]:
    paths = read_json_file(models_dir() / INDEX_FILE).get("bundles", [])
    return [p for p in paths if isinstance(p, str)]


def remember_bundle(path: "str | Path") -> str:
    """Add a bundle to "My models" (newest first); returns its model id."""
    model_id = bundle_id(path)
    paths = [model_id, *(p for p in _remembered() if p != model_id)]
    write_json_file(models_dir() / INDEX_FILE, {"bundles": paths})
    return model_id


def forget_bundle(path: "str | Path") -> bool:
    """Take a bundle off the list (its files stay); False when it was not listed."""
    model_id = bundle_id(path)
    paths = _remembered()
    if model_id not in paths:
        return False
    write_json_file(models_dir() / INDEX_FILE, {"bundles": [p for p in paths if p != model_id]})
    return True


def installed_bundles() -> list[str]:
    """Model ids of the listed bundles that still exist, then bundles copied into the models folder."""
    found = [p for p in _remembered() if is_bundle(p)]
    folder = models_dir()
    if folder.is_dir():
        found += [bundle_id(p) for p in sorted(folder.iterdir()) if is_bundle(p)]
    return list(dict.fromkeys(found))
