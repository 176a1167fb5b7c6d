"""Synthetic benchmark rasters: smooth 3-band uint8 scenes written window by window.

Smooth fields give land-cover-like blobs, so vectorising costs what it would on real imagery; speckle
(per-pixel noise) is the worst case of vectorising, kept apart. Written in row bands: generating a 16k x 16k raster
never holds it in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

BAND_ROWS = 512
# Noise averages to mid grey, equally far from these three prototypes of the `test` model: each pixel's
# class follows the noise, so the mask is speckle and vectorising makes millions of tiny polygons.
SPECKLE_CLASSES = ["red", "green", "blue"]


def _field(rows: np.ndarray, cols: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((len(rows), len(cols)), np.float32)
    for _ in range(4):
        fy, fx = rng.uniform(0.002, 0.02, 2)
        py, px = rng.uniform(0, 2 * np.pi, 2)
        out += np.sin(rows[:, None] * fy + py) * np.cos(cols[None, :] * fx + px)
    return out


def write_synthetic(path: Path, size: int, seed: int = 0, speckle: bool = False) -> Path:
    """Write (or reuse) a size x size RGB uint8 GeoTIFF in UTM with 0.5 m pixels: smooth fields, or per-pixel
    noise (`speckle`), which the `test` model with SPECKLE_CLASSES turns into a class per pixel or two."""
    path = Path(path)
    if path.exists():
        with rasterio.open(path) as ds:
            if ds.width == size and ds.height == size:
                return path
    tmp = path.with_name(f".{path.name}.partial")
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32633",
                   transform=Affine(0.5, 0, 500000.0, 0, -0.5, 5000000.0), tiled=True, blockxsize=256,
                   blockysize=256, compress="deflate", BIGTIFF="IF_SAFER")
    cols = np.arange(size, dtype=np.float32)
    with rasterio.open(tmp, "w", **profile) as dst:
        for r0 in range(0, size, BAND_ROWS):
            rows = np.arange(r0, min(size, r0 + BAND_ROWS), dtype=np.float32)
            if speckle:
                bands = list(np.random.default_rng([seed, r0]).integers(0, 256, (3, len(rows), size), np.uint8))
            else:
                bands = [(_field(rows, cols, seed + b) * 40 + 128).clip(0, 255).astype(np.uint8) for b in range(3)]
            dst.write(np.stack(bands), window=Window(0, r0, size, len(rows)))
    tmp.replace(path)
    return path
