"""The bundle format: `model.json` (the manifest) beside `weights.safetensors`.

Why a folder of plain files: a bundle is copied, zipped and shared like any GIS dataset; the
manifest is readable without torch (listing models imports none), and safetensors loads no code.
The manifest records the weights' size and sha256, checked before every load. Writing is atomic per
file and the manifest goes last, so a folder with a manifest always has the weights it names.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from ..errors import ModelError, WeightsError
from ..jsonfile import write_json_file
from ..protocol.training import BUNDLE_FILE, is_bundle

if TYPE_CHECKING:
    import torch

WEIGHTS_FILE = "weights.safetensors"
FORMAT = "rsseg-bundle"
FORMAT_VERSION = 2  # the newest this backend reads; 2 added `value_range` (version 1 bundles read unchanged)
__all__ = ["BUNDLE_FILE", "WEIGHTS_FILE", "BundleInfo", "bundle_dir", "is_bundle", "load_state", "read_bundle",
           "save_tensors", "write_bundle"]
PathLike = Union[str, Path]


@dataclass
class BundleInfo:
    """What a bundle's manifest holds: the model, its inputs and where it came from."""

    name: str  # shown in model lists ("My models")
    builder: str  # the family builder that rebuilds the network (models/<family>/family.py)
    config: dict[str, Any]  # the architecture, as the builder takes it
    classes: list[str]  # output channel -> class name
    colours: list[list[int]]  # output channel -> RGB
    bands: list[int]  # 1-based source bands the model was trained on, in input order
    mean: list[float]  # per input, applied to the engine's [0, 1] stretched tiles
    std: list[float]
    percentiles: list[float] = field(default_factory=lambda: [2.0, 98.0])  # the engine's stretch
    # A fixed stretch [low, high] (every band) used instead of the percentiles, e.g. [0, 255] for a model trained
    # on 8-bit benchmark images divided by 255 (`rsseg train semantic`); None: the percentile stretch
    value_range: Optional[list[float]] = None
    resolution: Optional[float] = None  # metres per pixel trained at (None: the raster's own grid)
    chip: int = 256  # training chip size: the tile size the model saw
    training: dict[str, Any] = field(default_factory=dict)  # data summary: raster, labels, field, split, chips
    metrics: dict[str, Any] = field(default_factory=dict)  # validation scores of the saved weights
    weights_sha256: str = ""
    weights_size: int = 0
    created: str = ""
    description: str = ""

    @property
    def n_inputs(self) -> int:
        return len(self.bands)

    def to_dict(self) -> dict[str, Any]:
        """The manifest. A bundle without a fixed value range is written as version 1 without the field, exactly
        as before, so older backends still read it; one with a value range is version 2, which an older backend
        refuses ("update the backend") rather than segmenting it with the wrong scaling."""
        data = asdict(self)
        if self.value_range is None:
            del data["value_range"]
        return {"format": FORMAT, "version": 1 if self.value_range is None else 2, **data}


def bundle_dir(path: PathLike) -> Path:
    p = Path(path).expanduser()
    return p.parent if p.name == BUNDLE_FILE else p


def read_bundle(path: PathLike) -> BundleInfo:
    """The manifest of the bundle at `path` (its folder or model.json); ModelError naming what is wrong."""
    folder = bundle_dir(path)
    manifest = folder / BUNDLE_FILE
    if not manifest.is_file():
        raise ModelError(f"{folder} is not a model bundle: it has no {BUNDLE_FILE} (a training run writes one "
                         "when it finishes)", fixes=("models",))
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {manifest}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelError(f"{manifest} is not an rsseg model bundle (no \"format\": \"{FORMAT}\")")
    if int(data.get("version", 0)) > FORMAT_VERSION:
        raise ModelError(f"{manifest} is bundle format {data.get('version')}, newer than this backend reads "
                         f"({FORMAT_VERSION}): update the backend")
    known = {f.name for f in fields(BundleInfo)}
    try:
        info = BundleInfo(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise ModelError(f"{manifest} lacks a field: {exc}") from None
    if not info.classes or len(info.colours) != len(info.classes) or len(info.mean) != len(info.bands) \
            or len(info.std) != len(info.bands) or not info.bands:
        raise ModelError(f"{manifest} is inconsistent: {len(info.classes)} classes with {len(info.colours)} "
                         f"colours, {len(info.bands)} bands with {len(info.mean)} means and {len(info.std)} stds")
    value_range = info.value_range
    if value_range is not None and not (isinstance(value_range, list) and len(value_range) == 2
                                        and all(isinstance(v, (int, float)) for v in value_range)
                                        and value_range[0] < value_range[1]):
        raise ModelError(f"{manifest} is inconsistent: value_range must be [low, high] with low < high, got "
                         f"{value_range!r}")
    return info


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_state(path: PathLike, info: Optional[BundleInfo] = None, device: str = "cpu") -> "dict[str, torch.Tensor]":
    """The bundle's weights, after their size and sha256 match the manifest (safetensors: no code runs)."""
    from safetensors.torch import load_file

    folder = bundle_dir(path)
    info = info or read_bundle(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise WeightsError(f"{weights} is missing: the bundle {folder} is incomplete (copy the whole folder)")
    size = weights.stat().st_size
    if size != info.weights_size or _sha256(weights) != info.weights_sha256:
        raise WeightsError(f"{weights} does not match its manifest (size {size}, expected {info.weights_size}, or "
                           "a different sha256): the file is damaged or was replaced; train again or copy the "
                           "bundle again")
    return load_file(str(weights), device=device)


def save_tensors(path: Path, state: "dict[str, torch.Tensor]") -> None:
    """Write `state` as safetensors under a temporary name beside `path`, then rename it into place: a
    reader finds the old file or the new one whole, never half of it."""
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bundle(folder: PathLike, info: BundleInfo, state: "dict[str, torch.Tensor]") -> Path:
    """Write `state` and the manifest into `folder` (created if needed); returns the folder.

    The manifest is removed first and written last: a crash leaves either no manifest or one naming
    the weights beside it, never a manifest naming other weights."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / BUNDLE_FILE).unlink(missing_ok=True)  # no manifest while the weights change
    weights = folder / WEIGHTS_FILE
    save_tensors(weights, state)
    info.weights_size = weights.stat().st_size
    info.weights_sha256 = _sha256(weights)
    write_json_file(folder / BUNDLE_FILE, info.to_dict())
    return folder
