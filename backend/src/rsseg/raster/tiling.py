"""Tile grid over a region and the separable blending weights of its tiles.

Tile starts are spread evenly so every overlap is at least the requested one and edge tiles stay
full-size inside the raster (no padding). Each tile's weight is an outer product of 1-D windows
that are zero for the first `overlap // 4` pixels of an inner edge (where a model sees the least
context), ramp linearly up to 1 across the overlap, and stay 1 on edges at the region border.
Because the grid is a product grid, the per-pixel sum of weights is the outer product of the
1-D sums, so blending never stores a weight image.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterator

import numpy as np

from ..errors import request_rules
from ..protocol.contracts import check_tiling
from ..windows import tile_starts


def edge_window(size: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1-D blending window: zero margin, linear ramp over the overlap, 1 in the middle."""
    w = np.ones(size, np.float32)
    if overlap <= 0:
        return w
    margin = overlap // 4
    ramp = np.clip((np.arange(overlap, dtype=np.float32) - margin + 1) / (overlap - 2 * margin + 1), 0.0, 1.0)
    n = min(overlap, size)
    if ramp_start:
        w[:n] = np.minimum(w[:n], ramp[:n])
    if ramp_end:
        w[size - n :] = np.minimum(w[size - n :], ramp[:n][::-1])
    return w


@dataclass(frozen=True)
class Tile:
    index: int
    row: int  # tile-row number
    col: int
    y: int  # offsets inside the region
    x: int
    height: int
    width: int


@dataclass(frozen=True)
class TileGrid:
    height: int
    width: int
    tile: int
    overlap: int

    def __post_init__(self) -> None:
        with request_rules():
            check_tiling(self.tile, self.overlap)

    @cached_property
    def ys(self) -> list[int]:
        return tile_starts(self.height, self.tile, self.overlap)

    @cached_property
    def xs(self) -> list[int]:
        return tile_starts(self.width, self.tile, self.overlap)

    @property
    def tile_height(self) -> int:
        return min(self.tile, self.height)

    @property
    def tile_width(self) -> int:
        return min(self.tile, self.width)

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def __iter__(self) -> Iterator[Tile]:
        for r, y in enumerate(self.ys):
            for c, x in enumerate(self.xs):
                yield Tile(r * len(self.xs) + c, r, c, y, x, self.tile_height, self.tile_width)

    def _windows(self, starts: list[int], size: int, length: int) -> list[np.ndarray]:
        return [edge_window(size, self.overlap, s > 0, s + size < length) for s in starts]

    @cached_property
    def row_weights(self) -> list[np.ndarray]:
        return self._windows(self.ys, self.tile_height, self.height)

    @cached_property
    def col_weights(self) -> list[np.ndarray]:
        return self._windows(self.xs, self.tile_width, self.width)

    def _sums(self, starts: list[int], windows: list[np.ndarray], length: int) -> np.ndarray:
        total = np.zeros(length, np.float32)
        for s, w in zip(starts, windows):
            total[s : s + len(w)] += w
        return total

    @cached_property
    def row_weight_sum(self) -> np.ndarray:
        return self._sums(self.ys, self.row_weights, self.height)

    @cached_property
    def col_weight_sum(self) -> np.ndarray:
        return self._sums(self.xs, self.col_weights, self.width)

    def weight(self, tile: Tile) -> np.ndarray:
        return np.outer(self.row_weights[tile.row], self.col_weights[tile.col])
