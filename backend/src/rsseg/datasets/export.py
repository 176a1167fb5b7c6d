"""An optional export of training chips for other tools: image chips, label masks and a manifest.

Training reads chips on the fly and needs none of this. The images keep the raster's bands, dtype and
nodata; the masks are uint8 class indices with ignore_index for pixels that do not count, and carry a
colour table so a viewer shows the classes instead of a near-black image. Both are georeferenced to
their window. Everything is written into a temporary folder beside the target and renamed into place
at the end, so an interrupted export leaves no half-written folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import rasterio
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform

from ..errors import ParameterError
from ..progress import CancelToken
from ..raster.palette import class_rgb
from .blocks import SpatialSplit
from .labels import LayerLabels
from .layer_chips import read_chips

PathLike = Union[str, Path]
FORMAT = "rsseg-chips/1"


def _colours(names: Sequence[str], ignore: int) -> dict[int, tuple[int, int, int, int]]:
    table = {i: (*rgb, 255) for i, rgb in enumerate(class_rgb(names))}
    table[ignore] = (0, 0, 0, 0)
    return table


def export_chips(raster: PathLike, labels: LayerLabels, split: SpatialSplit, folder: PathLike,
                 min_labelled: float = 0.0, bands: Optional[Sequence[int]] = None,
                 cancel: Optional[CancelToken] = None) -> dict[str, Any]:
    """Write the chips of `split` (training and validation) to `folder` (new or empty); returns the manifest."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ParameterError(f"{folder} is not an empty folder: choose a new folder for the chips")
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.partial-"))
    try:
        manifest = _write(raster, labels, split, work, min_labelled, bands, cancel)
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if folder.exists():
            folder.rmdir()
        os.replace(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def _write(raster: PathLike, labels: LayerLabels, split: SpatialSplit, work: Path, min_labelled: float,
           bands: Optional[Sequence[int]], cancel: Optional[CancelToken]) -> dict[str, Any]:
    with rasterio.open(raster) as src:
        profile = {"driver": "GTiff", "crs": src.crs, "nodata": src.nodata, "compress": "deflate"}
    colours = _colours(labels.class_names, labels.ignore_index)
    chips = []
    for name, windows in (("train", split.train), ("val", split.val)):
        (work / "images" / name).mkdir(parents=True)
        (work / "masks" / name).mkdir(parents=True)
        for i, chip in enumerate(read_chips(raster, labels, windows, bands, min_labelled)):
            if cancel is not None:
                cancel.check()
            stem = f"{i:05d}.tif"
            h, w = chip.label.shape
            where = window_transform(chip.window, labels.grid.transform)
            with rasterio.open(work / "images" / name / stem, "w", width=w, height=h, count=chip.image.shape[0],
                               dtype=chip.image.dtype, transform=where, **profile) as dst:
                dst.write(chip.image)
            with rasterio.open(work / "masks" / name / stem, "w", driver="GTiff", width=w, height=h, count=1,
                               dtype="uint8", crs=profile["crs"], transform=where, nodata=labels.ignore_index,
                               compress="deflate") as dst:
                dst.write(chip.label[None])
                dst.write_colormap(1, colours)
            counts = np.bincount(chip.label.ravel(), minlength=256)
            chips.append({"split": name, "image": f"images/{name}/{stem}", "mask": f"masks/{name}/{stem}",
                          "col": int(chip.window.col_off), "row": int(chip.window.row_off),
                          "bounds": list(window_bounds(chip.window, labels.grid.transform)),
                          "pixels": {n: int(counts[k]) for k, n in enumerate(labels.class_names) if counts[k]}})
    spec = labels.spec
    return {"format": FORMAT, "raster": str(raster), "labels": str(spec.path), "field": spec.field,
            "mode": spec.mode, "classes": list(labels.class_names), "ignore_index": labels.ignore_index,
            "chip": split.size, "stride": split.stride, "split": split.describe(), "chips": chips}
