"""The engine's instance output: one polygon per object, each object once across overlapping tiles.

The model here is a real (if simple) instance model: every distinct grey level of the tile that is
not background is one object, scored by its grey level. It is deterministic, so the expected objects
are known exactly from the raster that is written.
"""

from __future__ import annotations

import fiona
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box, shape

from rsseg.execution.tile_model import SIGMOID, Instance, InstanceTileModel, instance_score_logit
from rsseg.execution.tile_runner import TileRunner
from rsseg.protocol.contracts import RegionSpec, SegmentRequest
from rsseg.raster.engine import segment


class GreyLevelObjects:
    """Each grey level above the background (in 0..1 units, band 1) is one object with that level as its score."""

    class_names = ("object",)
    activation = SIGMOID
    n_inputs = 1
    encoder_id = "grey-levels"
    threshold = 0.05

    def __init__(self):
        self.calls = 0

    def encode(self, batch: np.ndarray) -> np.ndarray:
        return np.round(batch[:, 0] * 20) / 20  # levels in steps of 0.05, robust to the stretch's rounding

    def decode(self, features: np.ndarray) -> np.ndarray:
        return self.decode_instances(features)[0]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(batch))

    def decode_instances(self, features: np.ndarray):
        self.calls += 1
        logits = np.full((len(features), 1) + features.shape[1:], -20.0, np.float32)
        found = []
        for i, levels in enumerate(features):
            tile = []
            for rank, level in enumerate(sorted((v for v in np.unique(levels) if v > 0), reverse=True), start=1):
                mask = levels == level
                rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
                y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
                logits[i, 0][mask] = instance_score_logit(level)
                tile.append(Instance(0, float(level), int(x0), int(y0), mask[y0:y1, x0:x1].copy(), rank))
            found.append(tile)
        return logits, found


# Objects as (grey level, x0, y0, x1, y1) in pixels; two touch each other, one straddles the tiles' seams.
OBJECTS = [(1.0, 10, 10, 30, 30), (0.8, 30, 10, 50, 30), (0.6, 50, 50, 80, 80), (0.3, 100, 5, 110, 120),
           (0.1, 5, 100, 20, 115)]


@pytest.fixture()
def raster(tmp_path):
    data = np.zeros((128, 128), np.uint8)
    for level, x0, y0, x1, y1 in OBJECTS:
        data[y0:y1, x0:x1] = round(level * 250)
    path = tmp_path / "objects.tif"
    with rasterio.open(path, "w", driver="GTiff", width=128, height=128, count=1, dtype="uint8",
                       crs="EPSG:32616", transform=from_origin(500000, 3700000, 1.0, 1.0)) as dst:
        dst.write(data, 1)
    return path


def _features(path):
    with fiona.open(path) as layer:
        return [(shape(f["geometry"]), dict(f["properties"])) for f in layer]


def _request(raster, out, **fields):
    return SegmentRequest(raster=str(raster), out_dir=str(out), bands=(1,), value_range=(0.0, 250.0), **fields)


def test_the_protocol_is_recognised():
    assert isinstance(GreyLevelObjects(), InstanceTileModel)


@pytest.mark.parametrize("tile, overlap", [(128, 0), (48, 16), (40, 20), (32, 0)])
def test_one_polygon_per_object_across_tiles(raster, tmp_path, tile, overlap):
    """Touching objects stay two polygons; an object several tiles see is written once, whole."""
    result = segment(_request(raster, tmp_path / "out", tile=tile, overlap=overlap), GreyLevelObjects())
    features = _features(result.polygons)
    kept = [o for o in OBJECTS if o[0] >= GreyLevelObjects.threshold]
    assert len(features) == len(kept) == result.classes[0].polygons
    by_score = sorted(features, key=lambda f: -f[1]["score"])
    for (level, x0, y0, x1, y1), (geometry, props) in zip(sorted(kept, reverse=True), by_score):
        expected = box(500000 + x0, 3700000 - y1, 500000 + x1, 3700000 - y0)
        # whole as one tile saw it, or (the 10 x 115 px object no 40-48 px tile sees whole) its pieces joined
        assert geometry.symmetric_difference(expected).area == pytest.approx(0.0)
        assert props["score"] == pytest.approx(level, abs=0.026) and props["class"] == "object"
    assert sorted(p["instance_id"] for _, p in features) == list(range(1, len(kept) + 1))
    assert [p["rank"] for _, p in by_score] == list(range(1, len(kept) + 1))
    with rasterio.open(result.mask) as mask:
        assert (mask.read(1) == 1).sum() == sum((x1 - x0) * (y1 - y0) for _, x0, y0, x1, y1 in kept)


def test_threshold_drops_objects_from_raster_and_polygons_alike(raster, tmp_path):
    result = segment(_request(raster, tmp_path / "out", threshold=0.5), GreyLevelObjects())
    scores = sorted(p["score"] for _, p in _features(result.polygons))
    assert scores == pytest.approx([0.6, 0.8, 1.0], abs=0.026)
    with rasterio.open(result.mask) as mask:
        assert (mask.read(1) == 1).sum() == 400 + 400 + 900  # 20x20, 20x20, 30x30


def test_region_polygons_clip_objects(raster, tmp_path):
    inside = box(500000, 3700000 - 128, 500000 + 40, 3700000).__geo_interface__  # x < 40 only
    result = segment(_request(raster, tmp_path / "out", region=RegionSpec(polygons=[inside])), GreyLevelObjects())
    geometries = [g for g, _ in _features(result.polygons)]
    assert len(geometries) == 3  # 1.0 whole, 0.8 cut at x=40, 0.1 whole
    assert max(g.bounds[2] for g in geometries) == pytest.approx(500000 + 40)


def test_runner_hands_instances_over_once(raster):
    model = GreyLevelObjects()
    runner = TileRunner(model)
    tiles = np.zeros((2, 1, 16, 16), np.float32)
    tiles[1, 0, 2:5, 3:9] = 0.5
    logits = runner(tiles, ["a", "b"])
    found = runner.take_instances()
    assert logits.shape == (2, 1, 16, 16) and [len(f) for f in found] == [0, 1]
    assert (found[1][0].x0, found[1][0].y0, found[1][0].mask.shape) == (3, 2, (3, 6))
    assert runner.take_instances() == []

