"""Positions of fixed-size windows along one axis: shared by the engine's tile grid and the class-list
CLIP's sliding windows inside a tile, which sit on different floors (raster/ and models/)."""

from __future__ import annotations

import math


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread starts covering [0, length) with tiles of min(tile, length)."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    return [round(k * (length - tile) / (n - 1)) for k in range(n)]
