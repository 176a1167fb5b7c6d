"""Objects that instance models find in tiles, placed on the output grid once each.

With overlapping tiles an object near a seam is found by two or more tiles: whole by the tiles that
see all of it, cut by the tiles whose inner edge crosses it. At the end of the job the copies are
joined: copies from different tiles of the same class that overlap are one object. Such an object is
drawn by its best whole copy when a tile saw it whole, and as the union of its pieces when none did
(an object longer than the tile overlap); its score is the best copy's. Copies inside one tile are
never joined: they are objects the model told apart. Pixels become polygons as soon as a tile is
done, so a job holds polygons, not masks.
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
    geometry: object  # pixel coordinates of the output grid
    cut: bool  # touches an inner edge of its tile: the tile saw part of the object
    frame: tuple[int, int, int, int]  # the tile: x0, y0, x1, y1


def _on_seam(common, a: _Copy, b: _Copy) -> bool:
    """Whether the line two pieces share lies on an edge of one of their tiles (tiles that only touch)."""
    x0, y0, x1, y1 = common.bounds
    return any((x0 == x1 and x0 in (f[0], f[2])) or (y0 == y1 and y0 in (f[1], f[3])) for f in (a.frame, b.frame))


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
        for found in instances:
            if self.threshold is not None and found.score < self.threshold:
                continue
            height, width = found.mask.shape
            mask = found.mask & valid[found.y0:found.y0 + height, found.x0:found.x0 + width]
            if not mask.any():
                continue
            touches = (found.x0 == 0, found.y0 == 0, found.x0 + width >= tile.width, found.y0 + height >= tile.height)
            cut = any(t and i for t, i in zip(touches, inner))
            geometry = instance_geometry(mask, tile.x + found.x0, tile.y + found.y0)
            frame = (tile.x, tile.y, tile.x + tile.width, tile.y + tile.height)
            self._copies.append(_Copy(tile.index, found.channel, float(found.score), geometry, cut, frame))

    def objects(self) -> list[FoundObject]:
        copies = self._copies
        groups = _Groups(len(copies))
        if len(copies) > 1:
            geometries = [c.geometry for c in copies]
            left, right = shapely.STRtree(geometries).query(geometries, predicate="intersects")
            for i, j in zip(left.tolist(), right.tolist()):
                a, b = copies[i], copies[j]
                if i >= j or a.tile == b.tile or a.channel != b.channel:
                    continue
                common = a.geometry.intersection(b.geometry)
                shared = common.area / min(a.geometry.area, b.geometry.area)
                if shared >= (PIECE_OVERLAP if a.cut or b.cut else DUPLICATE_OVERLAP) \
                        or (a.cut and b.cut and common.length > 0 and _on_seam(common, a, b)):  # tiles that touch
                    groups.join(i, j)
        members: dict[int, list[_Copy]] = {}
        for index, copy in enumerate(copies):
            members.setdefault(groups.find(index), []).append(copy)
        found = []
        for group in members.values():
            whole = [c for c in group if not c.cut]
            best = max(whole or group, key=lambda c: c.score)
            geometry = best.geometry if whole else shapely.unary_union([c.geometry for c in group])
            found.append(FoundObject(best.channel + 1, max(c.score for c in group), geometry))
        return found
