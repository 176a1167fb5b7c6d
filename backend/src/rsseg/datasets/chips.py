"""Fixed-size training chips from an image raster and a label raster on the same grid.

Georeferenced training data is usually one large image plus a label raster of the same grid (a
rasterised vector layer, a land-cover map), not a folder of ready-cut pairs. `sample_chips` cuts
both into size x size windows every `stride` pixels, skips chips with too few labelled pixels
(label != ignore_index), and yields them in raster order or, given a seed, in a seeded shuffled
order: the same arguments always give the same chips. Windows are read one at a time (the label
first, so a skipped chip never reads the image), so a large raster is never held in memory.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from ..errors import ParameterError
from .semantic import IGNORE, DatasetError

PathLike = Union[str, Path]
GRID_TOLERANCE = 1e-6  # of a pixel: transforms differing by less are the same grid (float noise of writers)


@dataclass(frozen=True)
class Chip:
    """One training chip: both arrays were read at `window` of the shared grid."""

    image: np.ndarray  # [bands, size, size], the image raster's dtype
    label: np.ndarray  # [size, size], the label band
    window: Window  # pixel window (col_off, row_off, width, height); its geotransform:
    # rasterio.windows.transform(window, raster.transform)


def chip_windows(width: int, height: int, size: int, stride: Optional[int] = None) -> list[Window]:
    """Row-major size x size windows every `stride` pixels (default: `size`, no overlap) that lie
    wholly inside a width x height raster; strips narrower than a chip at the right and bottom
    edges are left out, and a raster smaller than one chip gives none."""
    stride = size if stride is None else stride
    if size < 1 or stride < 1:
        raise ParameterError(f"chip size and stride must be at least 1 pixel, got size {size}, stride {stride}")
    return [Window(col, row, size, size)
            for row in range(0, height - size + 1, stride) for col in range(0, width - size + 1, stride)]


def labelled_fraction(label: np.ndarray, ignore_index: Optional[int]) -> float:
    """Share of pixels whose label is not `ignore_index` (all of them when it is None)."""
    if ignore_index is None or label.size == 0:
        return 1.0
    return float(np.count_nonzero(label != ignore_index)) / label.size


def same_transform(a, b) -> bool:
    """Whether two affine transforms name one grid, up to float noise of the writers (GRID_TOLERANCE)."""
    tolerance = GRID_TOLERANCE * max(abs(a.a), abs(a.b), abs(a.d), abs(a.e))
    return all(abs(x - y) <= tolerance for x, y in zip(a[:6], b[:6]))


def check_same_grid(image: DatasetReader, label: DatasetReader) -> None:
    """DatasetError unless both rasters have the same size, transform and CRS: a chip window must
    name the same ground in both."""
    problems = []
    if (image.width, image.height) != (label.width, label.height):
        problems.append(f"size {image.width}x{image.height} vs {label.width}x{label.height} px")
    if not same_transform(image.transform, label.transform):
        problems.append(f"transform {tuple(image.transform)[:6]} vs {tuple(label.transform)[:6]}")
    if image.crs != label.crs:
        problems.append(f"CRS {image.crs} vs {label.crs}")
    if problems:
        raise DatasetError(f"the label raster {label.name} is not on the grid of the image {image.name}: "
                           f"{'; '.join(problems)} (resample the label onto the image's grid first)")


def open_dataset(path: PathLike) -> DatasetReader:
    """The raster at `path`, opened for reading; DatasetError (one line) when it is missing or unreadable."""
    if not Path(path).is_file():
        raise DatasetError(f"raster not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise DatasetError(f"{path}: not a readable raster ({exc})") from None


def sample_chips(image: PathLike, label: PathLike, size: int, stride: Optional[int] = None,
                 min_labelled: float = 0.0, ignore_index: Optional[int] = IGNORE, seed: Optional[int] = None,
                 label_band: int = 1) -> Iterator[Chip]:
    """Chips of every image band and one label band (`label_band`), at `chip_windows(size, stride)`.

    A chip is kept when `labelled_fraction(label, ignore_index) >= min_labelled` (0 keeps all).
    `seed` None yields row-major order; an int yields a permutation seeded by it. Set `ignore_index`
    to what the label raster uses for "not annotated" (its nodata, or 0 for a 0/255 mask whose 0 is
    unknown rather than background). Bad arguments and rasters off the grid raise here, before the
    first chip (the iterator opens the rasters again when it starts).
    """
    if not 0.0 <= min_labelled <= 1.0:
        raise ParameterError(f"min_labelled is a fraction between 0 and 1, got {min_labelled}")
    with open_dataset(image) as image_src, open_dataset(label) as label_src:
        check_same_grid(image_src, label_src)
        if not 1 <= label_band <= label_src.count:
            raise ParameterError(f"label band {label_band} is not in {label} ({label_src.count} bands)")
        windows = chip_windows(image_src.width, image_src.height, size, stride)
    order = range(len(windows)) if seed is None else np.random.default_rng(seed).permutation(len(windows))
    return _read_chips(image, label, [windows[int(i)] for i in order], label_band, min_labelled, ignore_index)


def _read_chips(image: PathLike, label: PathLike, windows: list[Window], label_band: int, min_labelled: float,
                ignore_index: Optional[int]) -> Iterator[Chip]:
    with open_dataset(image) as image_src, open_dataset(label) as label_src:
        for window in windows:
            values = label_src.read(label_band, window=window)
            if labelled_fraction(values, ignore_index) >= min_labelled:
                yield Chip(image_src.read(window=window), values, window)
