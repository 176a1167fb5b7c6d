"""Where weight files live: one flat folder, configurable, defaulting to a per-user data dir.

Files are stored under their registry name (e.g. `sam_vit_b_01ec64.pth`), so models that share
a component (SAM for refinement and for RSRefSeg) share one download.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from ..errors import WeightsError
from ..jsonfile import read_json_file, write_json_file
from ..spec import ModelSpec, WeightFile

ENV_DIR = "RSSEG_WEIGHTS_DIR"
ENV_MIRROR = "RSSEG_WEIGHTS_MIRROR"  # institutional mirror / offline cache: tried before the registry URLs


def candidate_urls(weight: WeightFile, urls: Optional[Sequence[str]] = None) -> list[str]:
    """Where a download looks for `weight`: the mirror (if $RSSEG_WEIGHTS_MIRROR is set) first, then `urls`
    or the registry's URLs. Empty: the file can only be imported."""
    found = []
    mirror = os.environ.get(ENV_MIRROR, "").strip()
    if mirror:
        found.append(f"{mirror.rstrip('/')}/{weight.name}")
    found.extend(weight.urls if urls is None else urls)
    return list(dict.fromkeys(found))


def weights_dir() -> Path:
    """$RSSEG_WEIGHTS_DIR, else the platform's per-user data dir (e.g. ~/.local/share/rsseg/weights).

    A path that is (or lies under) a regular file is refused here, once for every reader and writer,
    so listing, download, import and loading all say what to fix instead of failing with ENOTDIR.
    """
    configured = os.environ.get(ENV_DIR)
    if configured:
        return _folder(Path(configured).expanduser(), f"{ENV_DIR}={configured}")
    from platformdirs import user_data_dir

    default = Path(user_data_dir("rsseg", appauthor=False)) / "weights"
    return _folder(default, f"the default weights folder {default}")


def _folder(path: Path, named: str) -> Path:
    """`path`, unless it or its nearest existing parent is not a folder (it need not exist yet)."""
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or existing.is_dir():
        return path
    what = "is a file" if existing == path else f"lies under {existing}, which is a file"
    raise WeightsError(f"{named} {what}, not a folder: point {ENV_DIR} at a folder for the weight files "
                       "(it is created if missing)")


def weight_path(weight: WeightFile) -> Path:
    return weights_dir() / weight.name


def model_weight_paths(spec: ModelSpec) -> dict[str, Path]:
    return {w.name: weight_path(w) for w in spec.weights}


def read_json(name: str) -> dict[str, Any]:
    """A small JSON record in the weights dir; {} when absent or damaged (nothing is trusted then)."""
    return read_json_file(weights_dir() / name)


def write_json(name: str, data: dict[str, Any]) -> None:
    write_json_file(weights_dir() / name, data)
