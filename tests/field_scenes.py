"""Synthetic georeferenced scenes for the tests that train on layers (backend and plugin): a field with red
buildings and water squares of a chosen colour, written as a GeoTIFF and a GeoPackage of labelled polygons (real
rasterio and fiona files). pytest.ini puts tests/ on the path, so both test folders import it."""

from __future__ import annotations

from pathlib import Path

import fiona
import numpy as np
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box, mapping

SIZE, ORIGIN = 192, (300000.0, 5000000.0)
FIELD = (70, 140, 60)
COLOURS = {"building": (200, 60, 50), "water": (40, 60, 200)}


def scene(root: Path, name: str, seed: int, water: tuple[int, int, int], size: int = SIZE, count: int = 24,
          sides: tuple[int, int] = (14, 30)) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """A size x size field with up to `count` red buildings and water squares of colour `water` (sides in
    `sides`, never touching); returns the raster, the labels (field `kind`), the water truth and the class map
    (0 field, 1 building, 2 water)."""
    rng = np.random.default_rng(seed)
    image = np.empty((3, size, size), np.int16)
    image[:] = np.array(FIELD)[:, None, None]
    kinds = np.zeros((size, size), np.uint8)
    features = []
    for k in range(count):
        kind = ("building", "water")[k % 2]
        w, h = rng.integers(*sides, 2)
        c, r = rng.integers(0, size - w), rng.integers(0, size - h)
        if kinds[max(r - 2, 0):r + h + 2, max(c - 2, 0):c + w + 2].any():
            continue
        colour = water if kind == "water" else COLOURS["building"]
        image[:, r:r + h, c:c + w] = np.array(colour)[:, None, None]
        kinds[r:r + h, c:c + w] = 1 + (kind == "water")
        features.append((kind, box(ORIGIN[0] + c, ORIGIN[1] - (r + h), ORIGIN[0] + c + w, ORIGIN[1] - r)))
    image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
    raster = root / f"{name}.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(*ORIGIN, 1.0, 1.0)) as dst:
        dst.write(image)
    labels = root / f"{name}.gpkg"
    with fiona.open(labels, "w", driver="GPKG", crs="EPSG:32633",
                    schema={"geometry": "Polygon", "properties": {"kind": "str"}}) as out:
        for kind, geometry in features:
            out.write({"geometry": mapping(geometry), "properties": {"kind": kind}})
    return raster, labels, kinds == 2, kinds
