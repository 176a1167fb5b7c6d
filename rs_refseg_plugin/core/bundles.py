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

from ..protocol.training import BUNDLE, BUNDLE_FILE, NEW, OTHER, STALE, UNFINISHED, is_bundle, run_folder_state

__all__ = ["BUNDLE", "NEW", "OTHER", "STALE", "UNFINISHED", "bundle_classes", "classes_prompt", "is_bundle",
           "run_folder_state"]

MANIFEST = BUNDLE_FILE


def bundle_classes(model: str, rows: Optional[list[dict]] = None) -> list[str]:
    """A bundle's classes: from a model-list row of that id, else from its manifest; [] when `model` is
    not a bundle (or its manifest cannot be read)."""
    for row in rows or []:
        if row.get("id") == model and row.get("bundle") and isinstance(row.get("classes"), list):
            return [str(c) for c in row["classes"]]
    if not model or ("/" not in model and "\\" not in model) or not is_bundle(model):
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
