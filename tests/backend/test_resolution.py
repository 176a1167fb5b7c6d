"""Processing resolution: the raster is read on a grid of N metres per pixel; outputs carry that grid."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from rsseg.errors import ParameterError
from rsseg.protocol.contracts import SegmentRequest
from rsseg.raster.resample import native_resolution_m
from rsseg.service import run_segment

DATA = Path(__file__).parents[1] / "data"
NEON = DATA / "neon_osbs_rgb.tif"  # 0.1 m, EPSG:32617, 461 pixels whose three bands are all nodata (255)
VEGAS = DATA / "spacenet_vegas_roads_pan.tif"  # EPSG:4326, 2.7e-6 degrees per pixel, near 36.2 N


def run(tmp_path, raster, name, **kw):
    return run_segment(SegmentRequest(raster=str(raster), out_dir=str(tmp_path / name), classes=["tree", "soil"],
                                      tile=256, overlap=32, **kw))


def test_coarser_grid_halves_the_size_and_keeps_the_georeference(tmp_path):
    result = run(tmp_path, NEON, "coarse", resolution=0.2)
    with rasterio.open(result.mask) as mask, rasterio.open(NEON) as src:
        assert mask.crs == src.crs and mask.shape == (200, 200)
        assert mask.transform.almost_equals(src.transform * Affine.scale(2))
        assert mask.bounds == pytest.approx(src.bounds)
    assert any("processed at 0.2 m per pixel (200x200 px" in note for note in result.notes)
    assert result.nodata_pixels == 0  # averaging four pixels ignores the nodata ones


def test_finer_grid_upsamples_and_carries_nodata(tmp_path):
    native = run(tmp_path, NEON, "native", vectorise=False)
    fine = run(tmp_path, NEON, "fine", resolution=0.05, vectorise=False)
    assert (fine.width, fine.height) == (800, 800)
    assert native.nodata_pixels == 461 and fine.nodata_pixels == 4 * 461
    areas = [sum(c.area_m2 for c in r.classes) for r in (native, fine)]
    assert areas[1] == pytest.approx(areas[0], rel=1e-6)  # the same ground, in finer pixels


def test_geographic_rasters_use_metres_on_the_ground(tmp_path):
    with rasterio.open(VEGAS) as ds:
        res_x, res_y = native_resolution_m(ds)
        lat = ds.xy(ds.height // 2, ds.width // 2)[1]
    assert res_y == pytest.approx(2.7e-6 * 110_950, rel=0.01)
    assert res_x == pytest.approx(res_y * math.cos(math.radians(lat)), rel=0.01)
    result = run(tmp_path, VEGAS, "vegas", resolution=1.0, vectorise=False)
    assert result.width == round(1300 * res_x) and result.height == round(1300 * res_y)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_resolution_is_a_parameter_error(tmp_path, value):
    with pytest.raises(ParameterError, match="metres per pixel"):
        run(tmp_path, NEON, "bad", resolution=value)
    assert not (tmp_path / "bad").exists()


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_raster_without_crs_cannot_take_a_resolution(tmp_path):
    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8") as ds:
        ds.write(np.full((3, 64, 64), 100, np.uint8))
    with pytest.raises(ParameterError, match="has no CRS"):
        run(tmp_path, plain, "out", resolution=1.0)


def test_the_source_is_not_modified(tmp_path):
    before = hashlib.sha256(NEON.read_bytes()).hexdigest()
    run(tmp_path, NEON, "x", resolution=0.3)
    assert hashlib.sha256(NEON.read_bytes()).hexdigest() == before
