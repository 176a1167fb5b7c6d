"""Streaming blend of overlapping tile logits into finished output rows.

Why strips: a row-major pass over the whole region would keep pending rows as wide as the
raster, so memory would grow with it. The region is cut into vertical strips of `strip_width`
output columns (aligned to the GeoTIFF blocks) and memory is bounded by one strip. A tile that
crosses a strip's right edge runs once: the part of its logits right of the edge is spilled to a
temporary file and added again when the next strip reaches it, so blending stays exact and no
tile runs twice. Within a strip, rows are handed out as soon as the last tile touching them has
been added, in chunks of at most POP_ROWS rows to keep temporaries small.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from .tiling import Tile, TileGrid

DEFAULT_STRIP_WIDTH = 2048
POP_ROWS = 128


@dataclass(frozen=True)
class Strip:
    x0: int  # owned output columns [x0, x1) of the region
    x1: int
    cols: tuple[int, ...]  # tile-grid columns touching them


def plan_strips(grid: TileGrid, strip_width: int = DEFAULT_STRIP_WIDTH, align: int = 256) -> list[Strip]:
    """Cut the region into strips at least a tile wide; a narrow last strip joins its neighbour."""
    step = max(align, -(-max(strip_width, grid.tile_width) // align) * align)
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
    """Weighted logit sums and validity for the unfinished rows of one strip.

    Tiles must be added in row-major order with `pop` called when a tile row is complete; then
    the unfinished rows never exceed one tile height, so the buffers are allocated once.
    """

    def __init__(self, grid: TileGrid, strip: Strip, n_classes: int, row0: int = 0):
        self.grid, self.strip = grid, strip
        self.row0 = row0  # region row of buffer row 0 (a part job's first tile row)
        width = strip.x1 - strip.x0
        self.logits = np.zeros((n_classes, grid.tile_height, width), np.float32)
        self.valid = np.zeros((grid.tile_height, width), bool)
        self._weighted = np.empty((n_classes, grid.tile_height, min(width, grid.tile_width)), np.float32)

    def add(self, tile: Tile, logits: np.ndarray, valid: np.ndarray, x_from: int | None = None) -> None:
        """Add a tile's logits [K, h, w'] and validity [h, w'] covering columns [x_from, tile end)
        (x_from defaults to the tile's own left edge); weights are applied here."""
        x_from = tile.x if x_from is None else x_from
        a = max(x_from, self.strip.x0)
        b = min(tile.x + tile.width, self.strip.x1)
        if b <= a:
            return
        rows = slice(tile.y - self.row0, tile.y + tile.height - self.row0)
        if rows.start < 0 or rows.stop > self.valid.shape[0]:
            raise RuntimeError("tiles must be added in row-major order with finished rows popped")
        cols = slice(a - self.strip.x0, b - self.strip.x0)
        weight = np.outer(self.grid.row_weights[tile.row], self.grid.col_weights[tile.col][a - tile.x:b - tile.x])
        # weighted into a reused buffer: a fresh temporary per tile is an mmap and its page faults (memory.py)
        weighted = self._weighted[:, :rows.stop - rows.start, :b - a]
        np.multiply(logits[:, :, a - x_from:b - x_from], weight, out=weighted)
        self.logits[:, rows, cols] += weighted
        self.valid[rows, cols] |= valid[:, a - x_from:b - x_from]

    def pop(self, end: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Hand out finished rows [row0, end) in chunks: (first row, blended logits [K, n, w], valid)."""
        n = end - self.row0
        col_sum = self.grid.col_weight_sum[self.strip.x0:self.strip.x1]
        for i in range(0, n, POP_ROWS):
            j = min(n, i + POP_ROWS)
            norm = np.outer(self.grid.row_weight_sum[self.row0 + i:self.row0 + j], col_sum)
            yield self.row0 + i, self.logits[:, i:j] / np.maximum(norm, 1e-12), self.valid[i:j].copy()
        keep = self.valid.shape[0] - n
        self.logits[:, :keep] = self.logits[:, n:]
        self.logits[:, keep:] = 0.0
        self.valid[:keep] = self.valid[n:]
        self.valid[keep:] = False
        self.row0 = end


class Spill:
    """Logits of tiles crossing a strip's right edge, kept on disk for the next strip.

    Which tiles are spilled is kept in memory, so asking costs no file-system call."""

    def __init__(self, folder: Path, job: str):
        self.dir = folder / f".rsseg-spill-{job}"  # named after the job: a later job removes it if this one dies
        self.dir.mkdir()
        self._saved: set[int] = set()
        self._empty: set[int] = set()  # all-nodata tiles: nothing to add, but already read

    def _path(self, tile: Tile, part: str) -> Path:
        return self.dir / f"{tile.index}.{part}.npy"

    def save(self, tile: Tile, x_from: int, logits: np.ndarray | None, valid: np.ndarray) -> None:
        if logits is None:
            self._empty.add(tile.index)
            return
        cut = x_from - tile.x
        # .npy bytes written by Python, not np.savez: a zip failing on a full disk printed a traceback
        # from ZipFile.__del__, and numpy's own writes lose the errno
        for part, array in (("logits", logits[:, :, cut:]), ("valid", valid[:, cut:])):
            buffer = io.BytesIO()
            np.save(buffer, array)
            self._path(tile, part).write_bytes(buffer.getbuffer())
        self._saved.add(tile.index)

    def load(self, tile: Tile) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(logits, valid, first column) of the spilled part of a tile, or None for an all-nodata tile."""
        if tile.index in self._empty:
            self._empty.discard(tile.index)
            return None
        self._saved.discard(tile.index)
        paths = [self._path(tile, part) for part in ("logits", "valid")]
        logits, valid = (np.load(path) for path in paths)
        for path in paths:
            path.unlink()
        return logits, valid, tile.x + tile.width - valid.shape[1]

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def strip_tiles(grid: TileGrid, strip: Strip, tile_rows: Optional[range] = None) -> list[Tile]:
    """The strip's tiles in row-major order (of the given tile rows only)."""
    cols = set(strip.cols)
    return [t for t in grid if t.col in cols and (tile_rows is None or t.row in tile_rows)]


def finished_rows(grid: TileGrid, tile_row: int) -> int:
    """Region rows that no tile row after `tile_row` touches: [0, this)."""
    return grid.ys[tile_row + 1] if tile_row + 1 < len(grid.ys) else grid.height
