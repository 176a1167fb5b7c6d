"""A small synthetic scene for the plugin tests that train a model on layers: a field with red buildings and
yellow water squares, written as a GeoTIFF and a GeoPackage of labelled polygons (real rasterio and fiona files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE, ORIGIN = 128, (300000.0, 5000000.0)
COLOURS = {"building": (200, 60, 50), "water": (220, 210, 60)}


def write_scene(root: Path) -> tuple[Path, Path]:
    """A field with red buildings and yellow water squares: the raster and its labels (field `kind`)."""
    import fiona
    import rasterio
    from rasterio.transform import from_origin
    from shapely.geometry import box, mapping

    rng = np.random.default_rng(0)
    image = np.empty((3, SIZE, SIZE), np.int16)
    image[:] = np.array((70, 140, 60))[:, None, None]
    taken = np.zeros((SIZE, SIZE), bool)
    features = []
    for k in range(20):
        kind = ("building", "water")[k % 2]
        w, h = rng.integers(12, 24, 2)
        c, r = rng.integers(0, SIZE - w), rng.integers(0, SIZE - h)
        if taken[max(r - 2, 0):r + h + 2, max(c - 2, 0):c + w + 2].any():
            continue
        image[:, r:r + h, c:c + w] = np.array(COLOURS[kind])[:, None, None]
        taken[r:r + h, c:c + w] = True
        features.append((kind, box(ORIGIN[0] + c, ORIGIN[1] - (r + h), ORIGIN[0] + c + w, ORIGIN[1] - r)))
    assert {kind for kind, _ in features} == {"building", "water"}
    raster = root / "scene.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=SIZE, height=SIZE, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(*ORIGIN, 1.0, 1.0)) as dst:
        dst.write(np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8))
    labels = root / "labels.gpkg"
    with fiona.open(labels, "w", driver="GPKG", crs="EPSG:32633",
                    schema={"geometry": "Polygon", "properties": {"kind": "str"}}) as out:
        for kind, geometry in features:
            out.write({"geometry": mapping(geometry), "properties": {"kind": kind}})
    return raster, labels
