"""Streaming blend of overlapping tile logits into finished output rows.

Why strips: a row-major pass must keep the pending overlap rows of the whole raster width, so
memory would grow with the raster. The region is therefore cut into vertical strips of at most
`strip_width` output columns (aligned to the GeoTIFF block size). Each strip runs every tile that
touches its columns, so the tile column on a strip boundary runs twice (a few percent more model
calls on rasters wider than a strip) and blending stays exact. Within a strip, rows are finished
and handed out as soon as the last tile touching them has been added.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tiling import Tile, TileGrid

DEFAULT_STRIP_WIDTH = 4096


@dataclass(frozen=True)
class Strip:
    x0: int  # owned output columns [x0, x1) of the region
    x1: int
    cols: tuple[int, ...]  # tile-grid columns touching them


def plan_strips(grid: TileGrid, strip_width: int = DEFAULT_STRIP_WIDTH, align: int = 256) -> list[Strip]:
    """Cut the region into strips; a last strip narrower than half a strip joins its neighbour."""
    step = max(align, strip_width // align * align)
    edges = list(range(0, grid.width, step))
    if len(edges) > 1 and grid.width - edges[-1] < step // 2:
        edges.pop()
    edges.append(grid.width)
    strips = []
    for x0, x1 in zip(edges, edges[1:]):
        cols = tuple(c for c, x in enumerate(grid.xs) if x < x1 and x + grid.tile_width > x0)
        strips.append(Strip(x0, x1, cols))
    return strips


class StripAccumulator:
    """Weighted logit sums and validity for the unfinished rows of one strip."""

    def __init__(self, grid: TileGrid, strip: Strip, n_classes: int):
        self.grid, self.strip = grid, strip
        self.row0 = 0  # region row of self.logits[:, 0]
        self.logits = np.zeros((n_classes, 0, strip.x1 - strip.x0), np.float32)
        self.valid = np.zeros((0, strip.x1 - strip.x0), bool)

    def add(self, tile: Tile, logits: np.ndarray, valid: np.ndarray) -> None:
        """Add one tile's logits [K, h, w] (weighted) and validity [h, w]."""
        end = tile.y + tile.height
        have = self.row0 + self.valid.shape[0]
        if end > have:
            grow = end - have
            self.logits = np.concatenate(
                [self.logits, np.zeros((self.logits.shape[0], grow, self.logits.shape[2]), np.float32)], axis=1)
            self.valid = np.concatenate([self.valid, np.zeros((grow, self.valid.shape[1]), bool)])
        a = max(tile.x, self.strip.x0)
        b = min(tile.x + tile.width, self.strip.x1)
        src = slice(a - tile.x, b - tile.x)
        dst_rows = slice(tile.y - self.row0, end - self.row0)
        dst_cols = slice(a - self.strip.x0, b - self.strip.x0)
        weight = np.outer(self.grid.row_weights[tile.row], self.grid.col_weights[tile.col][src])
        self.logits[:, dst_rows, dst_cols] += logits[:, :, src] * weight
        self.valid[dst_rows, dst_cols] |= valid[:, src]

    def pop(self, end: int) -> tuple[int, np.ndarray, np.ndarray]:
        """Hand out finished rows [row0, end): (row0, blended logits [K, n, w], valid [n, w])."""
        n = end - self.row0
        row0 = self.row0
        norm = np.outer(self.grid.row_weight_sum[row0:end], self.grid.col_weight_sum[self.strip.x0:self.strip.x1])
        logits = self.logits[:, :n] / np.maximum(norm, 1e-12)
        valid = self.valid[:n].copy()
        self.logits = self.logits[:, n:].copy()
        self.valid = self.valid[n:].copy()
        self.row0 = end
        return row0, logits, valid


def strip_tiles(grid: TileGrid, strip: Strip) -> list[Tile]:
    cols = set(strip.cols)
    return [t for t in grid if t.col in cols]


def finished_rows(grid: TileGrid, tile_row: int) -> int:
    """Region rows that no tile row after `tile_row` touches: [0, this)."""
    return grid.ys[tile_row + 1] if tile_row + 1 < len(grid.ys) else grid.height
