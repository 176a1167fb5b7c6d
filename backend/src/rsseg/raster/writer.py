"""Progressive, atomic writing of the class-id and score GeoTIFFs.

Rasters are written window by window into hidden temporary files in the output folder and only
renamed to their final names by `commit()`, so a failed or cancelled job never leaves a file
that looks finished. Tiled; the mask is DEFLATE-compressed (on GDAL's worker threads where cores are free).

Scores: a requested score raster is DEFLATE-compressed with the floating-point predictor; one that
only feeds the vectoriser (polygon mean scores) and is removed with the job is written uncompressed,
because float scores shrink only to about 75% under DEFLATE at about 30 times the time of the plain
write (`rsseg bench`: this write was a third of a 4096² `test` job).
"""

from __future__ import annotations

import json
import os

import numpy as np
import rasterio
from rasterio.windows import Window

from ..errors import OutputError
from ..protocol.contracts import NODATA
from .captured_stderr import CapturedStderr
from .outputs import JOB_TAG, StagedFile
from .palette import colour_table

BLOCK = 256  # GeoTIFF tile size; strip boundaries are aligned to it
# GDAL's own threads for DEFLATE: the cores the engine's reader, writer and model threads leave over (none on two
# cores, where they slowed a job down by a tenth: `rsseg bench`)
COMPRESSION_THREADS = max(0, (os.cpu_count() or 1) - 2)


class ClassRasterWriter:
    """Writes the uint8 class raster and the float32 score raster of one job, window by window."""

    def __init__(self, mask: StagedFile, scores: StagedFile, crs, transform, width: int, height: int,
                 class_names: list[str], prompt: str, sentence: bool, job: str = "", keep_scores: bool = True):
        # libtiff prints write failures ("_tiffWriteProc: No space left on device.") straight to
        # stderr; they are kept here and end up in one OutputError instead.
        self.gdal_output = CapturedStderr()
        profile = dict(driver="GTiff", width=width, height=height, count=1, crs=crs, transform=transform,
                       tiled=True, blockxsize=BLOCK, blockysize=BLOCK, BIGTIFF="IF_SAFER",
                       **({"NUM_THREADS": str(COMPRESSION_THREADS)} if COMPRESSION_THREADS > 1 else {}))
        deflate = dict(compress="deflate")
        score_options = dict(deflate, predictor=3) if keep_scores else {}
        try:
            with self.gdal_output:
                self.mask = rasterio.open(mask.temp, "w", dtype="uint8", nodata=NODATA, **deflate, **profile)
                self.scores = rasterio.open(scores.temp, "w", dtype="float32", nodata=float("nan"),
                                            **score_options, **profile)
        except rasterio.errors.RasterioIOError as exc:
            self.close()
            raise OutputError(f"cannot write {mask.final.parent}: {exc}") from exc
        self.mask.write_colormap(1, colour_table(class_names, sentence))  # result.json's colours
        names = {str(i + 1): n for i, n in enumerate(class_names)}
        self.mask.update_tags(CLASS_NAMES=json.dumps({"0": "unlabelled", **names}), PROMPT=prompt,
                              **{f"CLASS_{k}": v for k, v in names.items()}, **{JOB_TAG: job})
        self.scores.update_tags(**{JOB_TAG: job})
        self.mask.set_band_description(1, "class id (0 unlabelled, 255 nodata)")
        self.scores.set_band_description(1, "score of the chosen class (0..1)")

    def write(self, window: Window, classes: np.ndarray, scores: np.ndarray) -> None:
        with self.gdal_output:
            self.mask.write(classes[None], window=window)
            self.scores.write(scores[None], window=window)

    def close(self) -> None:
        """Flushes the last blocks, so it fails like a write when the disk is full."""
        failure = None
        for name in ("mask", "scores"):
            dataset = getattr(self, name, None)
            if dataset is not None and not dataset.closed:
                try:
                    with self.gdal_output:
                        dataset.close()
                except Exception as exc:  # noqa: BLE001 - close both, report the first failure
                    failure = failure or exc
        if failure is None and self.gdal_output.reported_write_error:
            failure = OSError(f"a write failed: {self.gdal_output.text().strip()}")
        if failure is not None:
            self.gdal_output.failed = True
        self.gdal_output.release()
        if failure is not None:
            raise failure

