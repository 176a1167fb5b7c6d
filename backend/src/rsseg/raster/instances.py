"""Objects that instance models find in tiles, placed on the output grid once each.

With overlapping tiles an object near a seam is found by two or more tiles: whole by the tiles that
see all of it, cut by the tiles whose inner edge crosses it. At the end of the job the copies are
joined: copies from different tiles of the same class that overlap are one object. Such an object is
drawn by its best whole copy when a tile saw it whole, and as the union of its pieces when none did
(an object longer than the tile overlap); its score is the best copy's. Copies inside one tile are
never joined: they are objects the model told apart.

Copies are compared as pixels (each keeps its mask cropped to its box), not as polygons: overlaps of
masks are counts over the boxes' common part, fast even for ragged masks, and each object becomes
a polygon once, when it is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import shapely

from ..execution.tile_model import Instance
from .tiling import Tile, TileGrid
from .vectorize import FoundObject, instance_geometry

DUPLICATE_OVERLAP = 0.5  # two whole copies are one object when they share this much of the smaller one
PIECE_OVERLAP = 0.05  # a cut piece joins a copy from another tile when they share this much of the smaller one


@dataclass(frozen=True)
class _Copy:
    tile: int
    channel: int
    score: float
    x0: int  # the mask's corner on the output grid
    y0: int
    mask: np.ndarray  # bool [h, w]
    cut: bool  # touches an inner edge of its tile: the tile saw part of the object
    frame: tuple[int, int, int, int]  # the tile: x0, y0, x1, y1

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x0, self.y0, self.x0 + self.mask.shape[1], self.y0 + self.mask.shape[0]

    def window(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The mask over an output-grid window inside its box."""
        return self.mask[y0 - self.y0:y1 - self.y0, x0 - self.x0:x1 - self.x0]


def _shared(a: _Copy, b: _Copy) -> int:
    """Pixels two copies have in common."""
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a.box, b.box
    x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
    if x0 >= x1 or y0 >= y1:
        return 0
    return int(np.count_nonzero(a.window(x0, y0, x1, y1) & b.window(x0, y0, x1, y1)))


def _meet_at_seam(a: _Copy, b: _Copy) -> bool:
    """Whether pieces of tiles that only touch (no overlap) have pixels facing each other across the seam."""
    for first, second in ((a, b), (b, a)):
        if first.frame[2] == second.frame[0]:  # `first`'s right edge is `second`'s left edge
            seam = first.frame[2]
            rows = max(first.box[1], second.box[1]), min(first.box[3], second.box[3])
            if first.box[2] == seam and second.box[0] == seam and rows[0] < rows[1]:
                if (first.window(seam - 1, rows[0], seam, rows[1]) & second.window(seam, rows[0], seam + 1,
                                                                                     rows[1])).any():
                    return True
        if first.frame[3] == second.frame[1]:  # `first`'s bottom edge is `second`'s top edge
            seam = first.frame[3]
            cols = max(first.box[0], second.box[0]), min(first.box[2], second.box[2])
            if first.box[3] == seam and second.box[1] == seam and cols[0] < cols[1]:
                if (first.window(cols[0], seam - 1, cols[1], seam) & second.window(cols[0], seam, cols[1],
                                                                                     seam + 1)).any():
                    return True
    return False


def _union(copies: list[_Copy]) -> tuple[np.ndarray, int, int]:
    """The pieces' masks painted on their common box: (mask, x0, y0)."""
    boxes = np.array([c.box for c in copies])
    x0, y0 = boxes[:, :2].min(axis=0)
    x1, y1 = boxes[:, 2:].max(axis=0)
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    for c in copies:
        bx0, by0, bx1, by1 = c.box
        mask[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0] |= c.mask
    return mask, int(x0), int(y0)


class _Groups:
    """Union-find over copy indices."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int) -> None:
        self.parent[self.find(i)] = self.find(j)


class InstanceCollector:
    """Keeps the instances the runner returns (over the score threshold, inside valid pixels) and joins the
    copies that overlapping tiles found of one object (`objects()`)."""

    def __init__(self, grid: TileGrid, threshold: Optional[float]):
        self.grid, self.threshold = grid, threshold
        self._copies: list[_Copy] = []

    def add(self, tile: Tile, instances: Sequence[Instance], valid: np.ndarray) -> None:
        inner = (tile.x > 0, tile.y > 0, tile.x + tile.width < self.grid.width, tile.y + tile.height < self.grid.height)
        frame = (tile.x, tile.y, tile.x + tile.width, tile.y + tile.height)
        for found in instances:
            if self.threshold is not None and found.score < self.threshold:
                continue
            height, width = found.mask.shape
            mask = found.mask & valid[found.y0:found.y0 + height, found.x0:found.x0 + width]
            if not mask.any():
                continue
            touches = (found.x0 == 0, found.y0 == 0, found.x0 + width >= tile.width, found.y0 + height >= tile.height)
            cut = any(t and i for t, i in zip(touches, inner))
            self._copies.append(_Copy(tile.index, found.channel, float(found.score), tile.x + found.x0,
                                      tile.y + found.y0, mask, cut, frame))

    def _groups(self) -> dict[int, list[_Copy]]:
        copies = self._copies
        groups = _Groups(len(copies))
        if len(copies) > 1:
            boxes = shapely.box(*np.array([c.box for c in copies]).T)
            left, right = shapely.STRtree(boxes).query(boxes, predicate="intersects")  # boxes that meet or touch
            areas = [int(np.count_nonzero(c.mask)) for c in copies]
            for i, j in zip(left.tolist(), right.tolist()):
                a, b = copies[i], copies[j]
                if i >= j or a.tile == b.tile or a.channel != b.channel:
                    continue
                shared = _shared(a, b) / min(areas[i], areas[j])
                if shared >= (PIECE_OVERLAP if a.cut or b.cut else DUPLICATE_OVERLAP) \
                        or (a.cut and b.cut and not shared and _meet_at_seam(a, b)):
                    groups.join(i, j)
        members: dict[int, list[_Copy]] = {}
        for index, copy in enumerate(copies):
            members.setdefault(groups.find(index), []).append(copy)
        return members

    def objects(self) -> list[FoundObject]:
        found = []
        for group in self._groups().values():
            whole = [c for c in group if not c.cut]
            if whole:
                best = max(whole, key=lambda c: c.score)
                mask, x0, y0 = best.mask, best.x0, best.y0
            else:
                mask, x0, y0 = _union(group)
            found.append(FoundObject(group[0].channel + 1, max(c.score for c in group),
                                     instance_geometry(mask, x0, y0)))
        return found
