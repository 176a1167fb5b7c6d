"""Per-band contrast stretch to [0, 1], estimated from a bounded sample of the region.

Models see every tile through the same stretch, so tiled output does not depend on tile
placement. The sample is a grid of small windows, never a full read, so large rasters cost the
same as small ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from rasterio.windows import Window

from ..errors import AllNodataError
from .region import Region
from .source import RasterSource

SAMPLE_GRID = 6  # windows per side
SAMPLE_PIXELS = 1 << 20  # regions up to this size are read whole


@dataclass(frozen=True)
class Stretch:
    """Linear map of each band from [low, high] to [0, 1], clipped."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    def apply(self, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        low = np.asarray(self.low, np.float32)[:, None, None]
        span = np.asarray(self.high, np.float32)[:, None, None] - low
        out = np.subtract(data, low)  # in place from here: one temporary instead of three
        out /= span
        np.clip(out, 0.0, 1.0, out=out)
        if not valid.all():
            out[:, ~valid] = 0.0
        return out

    def to_dict(self) -> dict:
        return {"low": list(self.low), "high": list(self.high)}


def sample_windows(region: Region) -> list[Window]:
    """A grid of windows spread over the region, about SAMPLE_PIXELS pixels in all.

    The grid follows the region's aspect ratio, so thin regions are sampled as fully as square ones."""
    win = region.window
    w, h = int(win.width), int(win.height)
    if w * h <= SAMPLE_PIXELS:
        return [win]
    ratio, g2 = w / h, SAMPLE_GRID**2
    nx = int(np.clip(round(SAMPLE_GRID * math.sqrt(ratio)), min(2, w), g2 // min(2, h)))
    ny = int(np.clip(g2 // nx, min(2, h), h))
    per_window = SAMPLE_PIXELS / (nx * ny)
    sh = min(h // ny, max(1, math.ceil(math.sqrt(per_window / ratio))))
    sw = min(w // nx, max(1, math.ceil(per_window / sh)))
    sh = min(h // ny, max(1, math.ceil(per_window / sw)))  # rebalance when the width was capped
    cols = np.linspace(0, w - sw, nx).round().astype(int)
    rows = np.linspace(0, h - sh, ny).round().astype(int)
    return [Window(int(win.col_off) + c, int(win.row_off) + r, sw, sh) for r in rows for c in cols]


def estimate_stretch(
    source: RasterSource,
    region: Region,
    percentiles: tuple[float, float] = (2.0, 98.0),
    value_range: Optional[tuple[float, float]] = None,
) -> Stretch:
    """Percentile stretch over valid pixels of the sample; raises AllNodataError if there are none.

    The parameters are the request's, checked by SegmentRequest.validate()."""
    pieces: list[np.ndarray] = []
    for window in sample_windows(region):
        data, valid = region.read(source, window)
        if valid.any():
            pieces.append(data[:, valid])
    if not pieces:
        raise AllNodataError(
            f"no valid pixel in the requested region of {source.path} (all pixels are nodata, NaN or masked)"
        )
    n = len(source.bands)
    if value_range is not None:
        return Stretch((float(value_range[0]),) * n, (float(value_range[1]),) * n)
    values = np.concatenate(pieces, axis=1)
    low = np.percentile(values, percentiles[0], axis=1)
    high = np.percentile(values, percentiles[1], axis=1)
    high = np.where(high > low, high, low + 1.0)  # a constant band maps to 0 instead of dividing by 0
    return Stretch(tuple(float(v) for v in low), tuple(float(v) for v in high))
