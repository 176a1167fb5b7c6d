"""Progressive, atomic writing of the class-id and score GeoTIFFs.

Rasters are written window by window into hidden temporary files in the output folder and only
renamed to their final names by `commit()`, so a failed or cancelled job never leaves a file
that looks finished. Tiled and DEFLATE-compressed.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from ..protocol.contracts import NODATA
from ..errors import OutputError
from .palette import colour_table

BLOCK = 256  # GeoTIFF tile size; strip boundaries are aligned to it


def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create the output folder if needed and check it is writable (OutputError otherwise)."""
    path = Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {path}: {exc.strerror or exc}") from exc
    if not path.is_dir():
        raise OutputError(f"output path {path} exists and is not a folder")
    probe = path / f".rsseg-write-test-{uuid.uuid4().hex[:8]}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"output folder {path} is not writable: {exc.strerror or exc}") from exc
    return path


class StagedFile:
    """A final path plus the hidden temporary path that is written first."""

    def __init__(self, final: Path):
        self.final = final
        self.temp = final.with_name(f".{final.stem}.{uuid.uuid4().hex[:8]}.partial{final.suffix}")

    def commit(self) -> None:
        os.replace(self.temp, self.final)

    def discard(self) -> None:
        for path in (self.temp, *(Path(f"{self.temp}{s}") for s in (".aux.xml", "-wal", "-shm", "-journal"))):
            path.unlink(missing_ok=True)


class ClassRasterWriter:
    """Writes the uint8 class raster and the float32 score raster of one job, window by window."""

    def __init__(self, mask: StagedFile, scores: StagedFile, crs, transform, width: int, height: int,
                 class_names: list[str], prompt: str, sentence: bool):
        profile = dict(driver="GTiff", width=width, height=height, count=1, crs=crs, transform=transform,
                       tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress="deflate",
                       BIGTIFF="IF_SAFER")
        try:
            self.mask = rasterio.open(mask.temp, "w", dtype="uint8", nodata=NODATA, **profile)
            self.scores = rasterio.open(scores.temp, "w", dtype="float32", nodata=float("nan"),
                                        predictor=3, **profile)
        except rasterio.errors.RasterioIOError as exc:
            self.close()
            raise OutputError(f"cannot write {mask.final.parent}: {exc}") from exc
        self.mask.write_colormap(1, colour_table(len(class_names), sentence))
        names = {str(i + 1): n for i, n in enumerate(class_names)}
        self.mask.update_tags(CLASS_NAMES=json.dumps({"0": "unlabelled", **names}), PROMPT=prompt,
                              **{f"CLASS_{k}": v for k, v in names.items()})
        self.mask.set_band_description(1, "class id (0 unlabelled, 255 nodata)")
        self.scores.set_band_description(1, "score of the chosen class (0..1)")

    def write(self, window: Window, classes: np.ndarray, scores: np.ndarray) -> None:
        self.mask.write(classes[None], window=window)
        self.scores.write(scores[None], window=window)

    def close(self) -> None:
        for name in ("mask", "scores"):
            dataset = getattr(self, name, None)
            if dataset is not None and not dataset.closed:
                dataset.close()

