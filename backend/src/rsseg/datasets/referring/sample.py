"""The sample record every referring reader yields, its error type, and image/mask file I/O.

Images and masks are read with rasterio (already a backend dependency) so PNG, JPEG and TIF all
go through one path; files without a CRS are normal here, so that warning is silenced.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from ...errors import RssegError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


class ReferringDataError(RssegError):
    """A referring dataset file (annotation, image, mask, sentence list) the readers cannot use."""


@dataclass
class RefSample:
    """One (image, sentence, target mask) triplet.

    `image` is a path for datasets on disk (read it with `pixels()` when needed) or an HxWx3 uint8
    array for in-memory data; `mask` is a HxW bool array. `image_id` groups the sentences of one
    image; `sample_id` is unique within a dataset.
    """

    image: Union[Path, np.ndarray]
    sentence: str
    mask: np.ndarray
    image_id: str
    sample_id: str
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    def pixels(self) -> np.ndarray:
        """The image as HxWx3 uint8 (grey is repeated, extra bands dropped)."""
        if isinstance(self.image, np.ndarray):
            return self.image
        return read_image(Path(self.image))


def _read(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ReferringDataError(f"file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as dataset:
                return dataset.read()
    except RasterioIOError as exc:
        raise ReferringDataError(f"{path}: not a readable image ({exc})") from None


def read_image(path: Path) -> np.ndarray:
    """HxWx3 uint8; a 1-band image is repeated to 3 bands, a 4th (alpha) band is dropped."""
    bands = _read(path)
    if bands.dtype != np.uint8:
        raise ReferringDataError(f"{path}: expected an 8-bit image, got {bands.dtype}")
    if bands.shape[0] == 1:
        bands = np.repeat(bands, 3, axis=0)
    return np.ascontiguousarray(np.moveaxis(bands[:3], 0, -1))


def read_mask(path: Path) -> np.ndarray:
    """A binary mask file (0/1 or 0/255, one band or equal bands) as HxW bool."""
    bands = _read(path)
    mask = bands[0]
    values = np.unique(mask)
    if not set(values.tolist()) <= {0, 1, 255}:
        raise ReferringDataError(f"{path}: mask values {values[:8].tolist()} are not 0/1 or 0/255")
    return mask > 0


def write_png(path: Path, array: np.ndarray) -> None:
    """Write HxW or HxWx3 uint8 as a lossless PNG (the plain folder layout's format)."""
    array = np.asarray(array, np.uint8)
    bands = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="PNG", width=bands.shape[2], height=bands.shape[1],
                           count=bands.shape[0], dtype="uint8") as dataset:
            dataset.write(bands)
