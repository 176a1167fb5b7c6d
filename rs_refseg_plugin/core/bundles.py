"""Trained models ("My models") as the plugin sees them, without the backend: a bundle is a folder with
`model.json` (the manifest, plain JSON) beside its weights, and its model id is the folder's absolute path.

A training run writes `checkpoints/` (the last finished epoch, `step-N.json` and its weights) into the
bundle folder as it goes and `model.json` only when it finishes, so a folder with a checkpoint and no
manifest is an unfinished run that can be resumed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

MANIFEST = "model.json"
CHECKPOINTS = "checkpoints"

# bundle_state: what a chosen output folder holds
NEW, UNFINISHED, BUNDLE, OTHER = "new", "unfinished", "bundle", "other"


def bundle_state(folder: str | Path) -> str:
    """NEW (missing or empty), UNFINISHED (checkpoints, no manifest), BUNDLE (a finished model) or OTHER
    (a file, or a folder with other things in it)."""
    path = Path(folder)
    if not path.exists():
        return NEW
    if not path.is_dir():
        return OTHER
    if (path / MANIFEST).is_file():
        return BUNDLE
    if any((path / CHECKPOINTS).glob("step-*.json")):  # the last finished epoch, which a resumed run loads
        return UNFINISHED
    try:
        return OTHER if any(path.iterdir()) else NEW
    except OSError:
        return OTHER


def is_bundle(model: str) -> bool:
    """Whether a model id names a bundle folder (or its manifest)."""
    if not model or ("/" not in model and "\\" not in model):
        return False
    path = Path(model).expanduser()
    return (path / MANIFEST).is_file() or (path.name == MANIFEST and path.is_file())


def bundle_classes(model: str, rows: Optional[list[dict]] = None) -> list[str]:
    """A bundle's classes: from a model-list row of that id, else from its manifest; [] when `model` is
    not a bundle (or its manifest cannot be read)."""
    for row in rows or []:
        if row.get("id") == model and row.get("bundle") and isinstance(row.get("classes"), list):
            return [str(c) for c in row["classes"]]
    if not is_bundle(model):
        return []
    path = Path(model).expanduser()
    manifest = path if path.name == MANIFEST else path / MANIFEST
    try:
        classes = json.loads(manifest.read_text(encoding="utf-8")).get("classes")
    except (OSError, ValueError, AttributeError):
        return []
    return [str(c) for c in classes] if isinstance(classes, list) else []


def classes_prompt(classes: list[str]) -> str:
    """A bundle's classes as the Segment tab's class list ("background, building")."""
    return ", ".join(classes)
