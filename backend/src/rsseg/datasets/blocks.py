"""Spatial train/validation splits of one raster's chip grid.

Neighbouring pixels look alike, so chips drawn at random from one raster put near-copies of the
validation chips into training and the validation score says little about new ground. Here the
validation set is a region (blocks of a K x K grid, one side of the raster, or the user's polygons)
and the training chips keep a buffer of `buffer` pixels from it:

- a chip of the grid (`chips.chip_windows`, never random positions) lying wholly inside the region
  is a validation chip;
- a chip is a training chip when its gap to the region (in rows or columns, whichever is larger:
  the Chebyshev gap) is at least `buffer` pixels, so it is as far from every validation chip;
- every other chip (overlapping the region, or inside the buffer) is dropped.

The buffer is at least the chips' overlap (size - stride), so the gap between the two sets is at
least what neighbouring chips share; by default it is half a chip (and at least the overlap), so an
object cut by the boundary is not seen on both sides. Block edges are snapped to the stride, so
chips fit the blocks exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import shapely
from rasterio.windows import Window
from shapely.affinity import affine_transform
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from ..errors import ParameterError
from .chips import chip_windows
from .labels import RasterGrid, raster_grid, read_polygons
from .semantic import DatasetError

PathLike = Union[str, Path]
SIDES = ("east", "west", "north", "south")


@dataclass(frozen=True)
class SpatialSplit:
    """Training and validation chip windows of one raster, and what was dropped between them."""

    train: tuple[Window, ...]
    val: tuple[Window, ...]
    dropped: tuple[Window, ...]  # chips touching the validation region or inside the buffer
    size: int
    stride: int
    buffer: int
    region: BaseGeometry  # the validation region in pixel coordinates (x = column, y = row)
    how: str  # e.g. "blocks 3x3, validation (0, 2), (2, 1)"

    def describe(self) -> str:
        return (f"{self.how}: {len(self.train)} training chips, {len(self.val)} validation chips, "
                f"{len(self.dropped)} dropped (chip {self.size} px, stride {self.stride}, buffer {self.buffer})")


def window_box(window: Window) -> BaseGeometry:
    """A window as a rectangle in pixel coordinates (x = column, y = row)."""
    return box(window.col_off, window.row_off, window.col_off + window.width, window.row_off + window.height)


def chebyshev_gap(a: Window, b: Window) -> float:
    """Pixels between two windows along rows or columns, whichever is larger (0 when they touch or overlap)."""
    dx = max(b.col_off - (a.col_off + a.width), a.col_off - (b.col_off + b.width), 0)
    dy = max(b.row_off - (a.row_off + a.height), a.row_off - (b.row_off + b.height), 0)
    return max(dx, dy)


def _buffer(size: int, stride: int, buffer: Optional[int]) -> int:
    overlap = max(size - stride, 0)
    if buffer is None:
        return max(overlap, size // 2)
    if buffer < overlap:
        raise ParameterError(f"the buffer of {buffer} px is smaller than the chips' overlap of {overlap} px "
                             f"(chip {size} px, stride {stride}); give at least {overlap}")
    return int(buffer)


def split_windows(windows: Sequence[Window], region: BaseGeometry, size: int, stride: int, buffer: int,
                  how: str) -> SpatialSplit:
    """Sort `windows` into validation (inside `region`), training (at least `buffer` px from the region
    and from every validation chip) and dropped; `region` is in pixel coordinates."""
    if region.is_empty:
        raise DatasetError(f"{how}: the validation region is empty")
    boxes = np.array([window_box(w) for w in windows], dtype=object)
    shapely.prepare(region)
    inside = shapely.covered_by(boxes, region) if len(boxes) else np.zeros(0, dtype=bool)
    val = [w for w, keep in zip(windows, inside) if keep]
    # a chip grown by `buffer` on every side meets the region's interior exactly when its row-or-column gap
    # (chebyshev_gap) to some part of the region is under `buffer`; validation chips lie inside the region
    grown = np.array([box(w.col_off - buffer, w.row_off - buffer, w.col_off + w.width + buffer,
                          w.row_off + w.height + buffer) for w in windows], dtype=object)
    near = shapely.relate_pattern(grown, region, "T********") if len(grown) else np.zeros(0, dtype=bool)
    train = [w for w, i, n in zip(windows, inside, near) if not i and not n]
    dropped = [w for w, i, n in zip(windows, inside, near) if not i and n]
    split = SpatialSplit(tuple(train), tuple(val), tuple(dropped), size, stride, buffer, region, how)
    if not val:
        raise DatasetError(f"{split.describe()}: no whole chip fits in the validation region; use larger "
                           f"blocks, a larger fraction or smaller chips")
    if not train:
        raise DatasetError(f"{split.describe()}: no training chip is left outside the validation region and "
                           f"its buffer; use a smaller buffer, a smaller validation share or smaller chips")
    return split


def _edges(length: int, parts: int, stride: int, what: str) -> list[int]:
    steps = length // stride
    if parts < 1 or steps < parts:
        raise ParameterError(f"{parts} blocks {what} do not fit {length} px at a stride of {stride} px "
                             f"(at most {steps})")
    return [stride * round(i * steps / parts) for i in range(parts)] + [length]


def block_split(width: int, height: int, size: int, stride: Optional[int] = None,
                blocks: Union[int, tuple[int, int]] = 3, val_blocks: Optional[Sequence[tuple[int, int]]] = None,
                val_fraction: float = 0.2, seed: int = 0, buffer: Optional[int] = None) -> SpatialSplit:
    """A grid of `blocks` (rows x columns, or K x K) over the raster; `val_blocks` (row, col) are held out,
    or, when None, round(val_fraction * K*K) blocks (at least one, never all) drawn with `seed`."""
    stride = size if stride is None else stride
    windows = chip_windows(width, height, size, stride)
    rows, cols = (blocks, blocks) if isinstance(blocks, int) else blocks
    row_edges, col_edges = _edges(height, rows, stride, "down"), _edges(width, cols, stride, "across")
    if val_blocks is None:
        if not 0.0 < val_fraction < 1.0:
            raise ParameterError(f"val_fraction is a share between 0 and 1, got {val_fraction}")
        count = min(max(1, round(val_fraction * rows * cols)), rows * cols - 1)
        if count < 1:
            raise ParameterError("one block cannot be split into training and validation; use more blocks")
        drawn = np.random.default_rng(seed).permutation(rows * cols)[:count]
        val_blocks = sorted((int(i) // cols, int(i) % cols) for i in drawn)
    else:
        val_blocks = sorted({(int(r), int(c)) for r, c in val_blocks})
        bad = [b for b in val_blocks if not (0 <= b[0] < rows and 0 <= b[1] < cols)]
        if bad or not val_blocks:
            raise ParameterError(f"validation blocks {bad or '(none)'} are not blocks of the {rows}x{cols} grid "
                                 f"(row 0..{rows - 1}, column 0..{cols - 1})")
    region = shapely.union_all([box(col_edges[c], row_edges[r], col_edges[c + 1], row_edges[r + 1])
                                for r, c in val_blocks])
    how = f"blocks {rows}x{cols}, validation {', '.join(str(b) for b in val_blocks)}"
    return split_windows(windows, region, size, stride, _buffer(size, stride, buffer), how)


def side_split(width: int, height: int, size: int, stride: Optional[int] = None, fraction: float = 0.2,
               side: str = "east", buffer: Optional[int] = None) -> SpatialSplit:
    """The `fraction` of the raster on one `side` (east, west, north or south) is validation."""
    stride = size if stride is None else stride
    if side not in SIDES:
        raise ParameterError(f"side {side!r} is not one of {', '.join(SIDES)}")
    if not 0.0 < fraction < 1.0:
        raise ParameterError(f"the validation fraction is a share between 0 and 1, got {fraction}")
    length = width if side in ("east", "west") else height
    cut = stride * round((1.0 - fraction if side in ("east", "south") else fraction) * length / stride)
    region = {"east": box(cut, 0, width, height), "west": box(0, 0, cut, height),
              "south": box(0, cut, width, height), "north": box(0, 0, width, cut)}[side]
    how = f"{side} {fraction:g} (from pixel {cut})"
    return split_windows(chip_windows(width, height, size, stride), region, size, stride,
                         _buffer(size, stride, buffer), how)


def to_pixels(geometry: BaseGeometry, grid: RasterGrid) -> BaseGeometry:
    """A geometry in the grid's CRS moved to pixel coordinates (x = column, y = row)."""
    inverse = ~grid.transform
    return affine_transform(geometry, [inverse.a, inverse.b, inverse.d, inverse.e, inverse.xoff, inverse.yoff])


def polygon_split(raster: "PathLike | RasterGrid", path: PathLike, size: int, stride: Optional[int] = None,
                  layer: Optional[str] = None, buffer: Optional[int] = None) -> SpatialSplit:
    """The user's validation polygons (any OGR layer, any CRS): chips inside them are validation,
    chips overlapping them or within the buffer are dropped from training."""
    stride = size if stride is None else stride
    grid = raster_grid(raster)
    polygons = read_polygons(path, layer, grid, None, "validation layer")
    region = shapely.union_all([to_pixels(g, grid) for g in polygons.geometries])
    if not region.intersects(box(0, 0, grid.width, grid.height)):
        raise DatasetError(f"the validation layer {path} does not overlap the raster {grid.name}")
    how = f"validation polygons {path}"
    return split_windows(chip_windows(grid.width, grid.height, size, stride), region, size, stride,
                         _buffer(size, stride, buffer), how)
