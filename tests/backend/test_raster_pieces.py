"""Tests for the raster engine's pieces on real rasterio files: RasterSource (band mapping, dtypes,
validity rules, VRT, CRSs), the percentile stretch, regions, areas and decide(). What the engine
writes (palette, class raster writer, output staging) is test_raster_writer.py."""

from __future__ import annotations

import math
import warnings
from xml.sax.saxutils import escape

import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.windows import Window
from scipy import special
from shapely.geometry import Polygon, mapping

from rsseg.errors import (
    AllNodataError,
    BandError,
    NotARasterError,
    ParameterError,
    RasterNotFoundError,
    RegionError,
    RssegError,
)
from rsseg.models import SIGMOID, SOFTMAX, build_model
from rsseg.protocol.contracts import NODATA, UNLABELLED, RegionSpec, SegmentRequest
from rsseg.raster.areas import pixel_area_m2, row_pixel_areas_m2
from rsseg.raster.engine import decide, segment
from rsseg.raster.normalize import SAMPLE_GRID, SAMPLE_PIXELS, Stretch, estimate_stretch, sample_windows
from rsseg.raster.region import Region, resolve_region
from rsseg.raster.source import RasterSource, open_raster, resolve_bands

UTM33 = CRS.from_epsg(32633)
T = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
FT_US = 1200.0 / 3937.0  # metres per US survey foot


def write(path, data, crs=UTM33, transform=T, nodata=None, **kw):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata, **kw) as dst:
        dst.write(data)
    return path


def read_all(source: RasterSource):
    return source.read(Window(0, 0, source.width, source.height))


def six_band(tmp_path):
    h, w = 5, 7
    base = np.arange(h * w, dtype=np.uint16).reshape(h, w)
    data = np.stack([base + 1000 * b for b in range(1, 7)])  # band b holds b*1000 + i
    return write(tmp_path / "six.tif", data), data


# --------------------------------------------------------------------------------------------
# RasterSource: opening and band mapping
# --------------------------------------------------------------------------------------------

def test_explicit_band_mapping_in_order(tmp_path):
    path, data = six_band(tmp_path)
    with RasterSource(path, bands=(3, 2, 1)) as src:
        assert src.bands == (3, 2, 1)
        assert src.dataset.mode == "r"  # the user's raster is never opened for writing
        out, valid = read_all(src)
    assert out.dtype == np.float32 and out.shape == (3, 5, 7) and valid.all()
    np.testing.assert_array_equal(out, data[[2, 1, 0]].astype(np.float32))
    with RasterSource(path, bands=[6, 1, 6]) as src:
        np.testing.assert_array_equal(read_all(src)[0], data[[5, 0, 5]])


def test_windowed_read(tmp_path):
    path, data = six_band(tmp_path)
    with RasterSource(path, bands=(4, 5, 6)) as src:
        out, valid = src.read(Window(2, 1, 4, 3))
    np.testing.assert_array_equal(out, data[3:6, 1:4, 2:6])
    assert valid.shape == (3, 4)


def test_one_band_is_replicated(tmp_path):
    path, data = six_band(tmp_path)
    with RasterSource(path, bands=(5,)) as src:
        assert src.bands == (5, 5, 5)
        out, _ = read_all(src)
    np.testing.assert_array_equal(out, np.repeat(data[4:5], 3, axis=0))
    with RasterSource(path, bands=(2,), n_inputs=4) as src:
        assert src.bands == (2, 2, 2, 2)


def test_default_mapping_uses_colour_interpretation(tmp_path):
    data = np.stack([np.full((4, 6), v, np.uint8) for v in (10, 20, 30, 40)])
    path = write(tmp_path / "bgrn.tif", data)
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]
    with RasterSource(path) as src:
        assert src.bands == (3, 2, 1)
        np.testing.assert_array_equal(read_all(src)[0][:, 0, 0], [30, 20, 10])
    # without red/green/blue interpretation: the first bands, in order
    path, _ = six_band(tmp_path)
    with RasterSource(path) as src:
        assert src.bands == (1, 2, 3)
    with rasterio.open(path) as ds:
        assert resolve_bands(ds, None, 1) == (1,)
        assert resolve_bands(ds, None, 6) == (1, 2, 3, 4, 5, 6)
    # a single band raster is replicated
    single = write(tmp_path / "pan.tif", np.ones((3, 3), np.uint16))
    with RasterSource(single) as src:
        assert src.bands == (1, 1, 1)


@pytest.mark.parametrize("bands,fragment", [
    ((0,), "band 0"), ((7,), "band 7"), ((-1, 2, 3), "band -1"), ((1, 2), "takes 3 band"),
    ((1, 2, 3, 4), "takes 3 band"),
])
def test_band_errors(tmp_path, bands, fragment):
    path, _ = six_band(tmp_path)
    with pytest.raises(BandError, match=fragment) as info:
        RasterSource(path, bands=bands)
    assert "six.tif" in str(info.value)  # names the file


def test_two_band_raster_needs_a_mapping(tmp_path):
    path = write(tmp_path / "two.tif", np.ones((2, 3, 3), np.uint8))
    with pytest.raises(BandError, match="2 bands but the model takes 3$") as info:
        RasterSource(path)
    assert info.value.text("cli").endswith("takes 3: choose the bands with --bands (e.g. --bands 1 to replicate "
                                           "one band)")
    assert "Bands, resolution and nodata" in info.value.text("gui") and "--" not in info.value.text("gui")
    with RasterSource(path, bands=(2,)) as src:
        assert src.bands == (2, 2, 2)


def test_open_errors(tmp_path):
    with pytest.raises(RasterNotFoundError, match="missing.tif"):
        RasterSource(tmp_path / "missing.tif")
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(NotARasterError, match="not a raster"):
        open_raster(text)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(NotARasterError, match="directory"):
        open_raster(folder)
    assert issubclass(NotARasterError, RssegError) and issubclass(BandError, RssegError)


# --------------------------------------------------------------------------------------------
# RasterSource: dtypes and validity
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,values", [
    ("uint8", [0, 1, 127, 255]),
    ("uint16", [0, 1, 40000, 65535]),
    ("int16", [-32768, -1, 0, 32767]),
    ("float32", [-1e6, -0.5, 3.25, 1e6]),
])
def test_dtypes_read_as_float32(tmp_path, dtype, values):
    row = np.array(values, dtype=dtype)
    data = np.stack([np.tile(row, (3, 1)) for _ in range(3)])
    data[1] = data[1][:, ::-1]
    path = write(tmp_path / f"{dtype}.tif", data)
    with RasterSource(path) as src:
        out, valid = read_all(src)
    assert out.dtype == np.float32 and valid.all()
    np.testing.assert_array_equal(out, data.astype(np.float32))


def test_nan_pixels_are_invalid(tmp_path):
    data = np.ones((3, 4, 5), np.float32)
    data[1, 1, 1] = np.nan  # one band only
    data[:, 2, 3] = np.nan  # all bands
    path = write(tmp_path / "nan.tif", data)
    with RasterSource(path) as src:
        _, valid = read_all(src)
    expected = np.ones((4, 5), bool)
    expected[1, 1] = expected[2, 3] = False
    np.testing.assert_array_equal(valid, expected)
    # a NaN in a band that is not mapped does not matter
    with RasterSource(path, bands=(1, 3, 3)) as src:
        _, valid = read_all(src)
    assert valid.sum() == 19 and not valid[2, 3]


@pytest.mark.parametrize("dtype,nodata", [("uint8", 255), ("uint8", 0), ("int16", -9999), ("float32", -9999.0)])
def test_nodata_needs_all_mapped_bands(tmp_path, dtype, nodata):
    data = np.full((3, 3, 4), 7, dtype)
    data[:, 0, 0] = nodata  # all bands: invalid
    data[0, 0, 1] = nodata  # one band only: valid (e.g. a saturated red pixel with nodata=255)
    data[[0, 2], 0, 2] = nodata  # two of three: valid
    data[2, 1, 1] = nodata  # band 3 only
    path = write(tmp_path / "nd.tif", data, nodata=nodata)
    with RasterSource(path) as src:
        out, valid = read_all(src)
    expected = np.ones((3, 4), bool)
    expected[0, 0] = False
    np.testing.assert_array_equal(valid, expected)
    assert out[0, 0, 1] == np.float32(nodata)  # data is passed through; validity is separate
    # the rule applies to the *mapped* bands: with (1, 3, 1) the pixel whose bands 1 and 3 are nodata is out
    with RasterSource(path, bands=(1, 3, 1)) as src:
        _, valid = read_all(src)
    expected[0, 2] = False
    np.testing.assert_array_equal(valid, expected)
    # a replicated band is invalid wherever it equals nodata
    with RasterSource(path, bands=(3,)) as src:
        _, valid = read_all(src)
    np.testing.assert_array_equal(~valid, data[2] == nodata)


def test_internal_mask_is_respected(tmp_path):
    data = np.full((3, 4, 5), 9, np.uint8)
    mask = np.full((4, 5), 255, np.uint8)
    mask[0, :2] = 0
    mask[3, 4] = 0
    path = tmp_path / "masked.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", driver="GTiff", width=5, height=4, count=3, dtype="uint8", crs=UTM33,
                           transform=T) as dst:
            dst.write(data)
            dst.write_mask(mask)
    assert not (tmp_path / "masked.tif.msk").exists()  # internal, not a side-car
    with RasterSource(path) as src:
        _, valid = read_all(src)
    np.testing.assert_array_equal(valid, mask > 0)


def test_alpha_band_is_respected(tmp_path):
    data = np.full((4, 4, 5), 50, np.uint8)
    data[3] = 255
    data[3, 2, 1:3] = 0
    path = write(tmp_path / "rgba.tif", data, photometric="RGB", alpha="YES")
    with RasterSource(path) as src:
        assert src.bands == (1, 2, 3)  # colour interpretation skips the alpha band
        _, valid = read_all(src)
    np.testing.assert_array_equal(valid, data[3] > 0)


def test_vrt_opens(tmp_path):
    h, w = 6, 8
    data = (np.arange(3 * h * w, dtype=np.uint16).reshape(3, h, w) + 1)
    data[:, 0, 0] = 0
    write(tmp_path / "base.tif", data)
    bands = []
    for vrt_band, src_band in enumerate((3, 2, 1), start=1):  # the VRT reverses the band order
        bands.append(f"""
  <VRTRasterBand dataType="UInt16" band="{vrt_band}">
    <NoDataValue>0</NoDataValue>
    <SimpleSource>
      <SourceFilename relativeToVRT="1">base.tif</SourceFilename>
      <SourceBand>{src_band}</SourceBand>
      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>
      <DstRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>
    </SimpleSource>
  </VRTRasterBand>""")
    vrt = tmp_path / "mosaic.vrt"
    vrt.write_text(f"""<VRTDataset rasterXSize="{w}" rasterYSize="{h}">
  <SRS>{escape(UTM33.to_wkt())}</SRS>
  <GeoTransform>{T.c}, {T.a}, 0, {T.f}, 0, {T.e}</GeoTransform>{''.join(bands)}
</VRTDataset>
""")
    with RasterSource(vrt) as src:
        assert src.dataset.driver == "VRT" and src.crs == UTM33 and src.transform == T
        assert (src.width, src.height) == (w, h)
        out, valid = read_all(src)
    np.testing.assert_array_equal(out, data[::-1].astype(np.float32))
    assert not valid[0, 0] and valid.sum() == h * w - 1


def test_geographic_and_us_feet_rasters(tmp_path):
    data = np.stack([np.full((40, 50), v, np.uint8) for v in (10, 200, 90)])
    data[:, :, 25:] = 120
    geo_t = Affine(0.0001, 0.0, 13.0, 0.0, -0.0001, 52.5)
    ft_t = Affine(3.0, 0.0, 980000.0, 0.0, -3.0, 200000.0)
    geo = write(tmp_path / "geo.tif", data, crs=CRS.from_epsg(4326), transform=geo_t)
    feet = write(tmp_path / "feet.tif", data, crs=CRS.from_epsg(2263), transform=ft_t)
    for path in (geo, feet):
        with RasterSource(path) as src:
            out, valid = read_all(src)
            assert valid.all()
            np.testing.assert_array_equal(out, data)
    model = build_model("test", classes=["red", "grey"], sentence=None)

    result = segment(SegmentRequest(raster=str(feet), out_dir=str(tmp_path / "o_ft"), vectorise=False), model)
    total = sum(c.area_m2 for c in result.classes)
    assert sum(c.pixels for c in result.classes) == 2000
    assert total == pytest.approx(2000 * (3 * FT_US) ** 2, rel=1e-9)
    assert "2263" in result.crs

    result = segment(SegmentRequest(raster=str(geo), out_dir=str(tmp_path / "o_geo"), vectorise=False,
                                    region=RegionSpec(bbox=(13.001, 52.4965, 13.004, 52.4985))), model)
    assert (result.width, result.height) == (30, 20)
    geod = pyproj.Geod(ellps="WGS84")
    expected = 0.0
    for row in range(15, 35):  # the bbox rows: 52.4985 is row 15, 52.4965 row 35
        north, south = 52.5 - row * 0.0001, 52.5 - (row + 1) * 0.0001
        a, _ = geod.polygon_area_perimeter([13.001, 13.004, 13.004, 13.001], [north, north, south, south])
        expected += abs(a)
    assert sum(c.area_m2 for c in result.classes) == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------------------------
# normalize
# --------------------------------------------------------------------------------------------

def _stretch_raster(tmp_path):
    rng = np.random.default_rng(5)
    data = rng.gamma(2.0, 300.0, (3, 50, 60)).astype(np.float32)
    data[:, :10, :10] = -9999  # declared nodata, all bands: excluded
    data[0, 20, 20] = -9999  # one band only: a valid pixel, its value counts
    data[2, 30:33, 40:50] = np.nan  # NaN: excluded
    path = write(tmp_path / "stretch.tif", data, nodata=-9999)
    valid = ~((data == -9999).all(axis=0) | np.isnan(data).any(axis=0))
    return path, data, valid


@pytest.mark.parametrize("percentiles", [(2.0, 98.0), (10.0, 90.0), (0.0, 100.0)])
def test_percentile_stretch_matches_numpy(tmp_path, percentiles):
    path, data, valid = _stretch_raster(tmp_path)
    with RasterSource(path) as src:
        region = resolve_region(RegionSpec(), src.dataset)
        stretch = estimate_stretch(src, region, percentiles)
    for b in range(3):
        lo, hi = np.percentile(data[b][valid], percentiles)
        assert stretch.low[b] == pytest.approx(lo, rel=1e-6)
        assert stretch.high[b] == pytest.approx(hi, rel=1e-6)
    assert stretch.to_dict() == {"low": list(stretch.low), "high": list(stretch.high)}


def test_stretch_uses_only_pixels_inside_the_polygon_region(tmp_path):
    path, data, valid = _stretch_raster(tmp_path)
    poly = Polygon([(500150, 4999850), (500450, 4999850), (500450, 4999650), (500150, 4999650)])
    with RasterSource(path) as src:
        region = resolve_region(RegionSpec(polygons=[mapping(poly)]), src.dataset)
        stretch = estimate_stretch(src, region)
    inside = np.zeros_like(valid)
    inside[15:35, 15:45] = True
    for b in range(3):
        lo, hi = np.percentile(data[b][valid & inside], [2, 98])
        assert (stretch.low[b], stretch.high[b]) == pytest.approx((lo, hi), rel=1e-6)


def test_stretch_apply(tmp_path):
    stretch = Stretch((0.0, 100.0), (1000.0, 200.0))
    data = np.array([[[-5, 0, 500, 1000, 2000]], [[100, 150, 200, 99, np.nan]]], np.float32)
    valid = np.array([[True, True, True, True, False]])
    out = stretch.apply(data, valid)
    np.testing.assert_allclose(out, [[[0, 0, 0.5, 1, 0]], [[0, 0.5, 1, 0, 0]]])
    assert out.dtype == np.float32 and not np.isnan(out).any()


def test_constant_band_does_not_divide_by_zero(tmp_path):
    data = np.stack([np.arange(100, dtype=np.uint8).reshape(10, 10), np.full((10, 10), 7, np.uint8),
                     np.full((10, 10), 200, np.uint8)])
    path = write(tmp_path / "const.tif", data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with RasterSource(path) as src:
            stretch = estimate_stretch(src, resolve_region(RegionSpec(), src.dataset))
            out = stretch.apply(*read_all(src))
    assert stretch.low[1:] == (7.0, 200.0) and stretch.high[1:] == (8.0, 201.0)
    assert np.isfinite(out).all() and (out[1:] == 0).all()
    assert 0 < out[0].mean() < 1


def test_value_range_fixed_stretch(tmp_path):
    path, data, valid = _stretch_raster(tmp_path)
    with RasterSource(path) as src:
        stretch = estimate_stretch(src, resolve_region(RegionSpec(), src.dataset), value_range=(0, 4000))
        out = stretch.apply(*read_all(src))
    assert stretch.low == (0.0, 0.0, 0.0) and stretch.high == (4000.0, 4000.0, 4000.0)
    np.testing.assert_allclose(out[:, valid], np.clip(data[:, valid] / 4000, 0, 1), rtol=1e-6)
    assert (out[:, ~valid] == 0).all()


def test_all_nodata_region_raises(tmp_path):
    path = write(tmp_path / "empty.tif", np.zeros((3, 20, 20), np.uint8), nodata=0)
    with RasterSource(path) as src, pytest.raises(AllNodataError, match="empty.tif"):
        estimate_stretch(src, resolve_region(RegionSpec(), src.dataset))
    data = np.full((3, 20, 20), 9, np.uint8)
    data[:, :10] = 0
    path = write(tmp_path / "half.tif", data, nodata=0)
    with RasterSource(path) as src:  # a polygon over the nodata half only
        region = resolve_region(RegionSpec(bbox=(500000, 4999900, 500200, 5000000)), src.dataset)
        assert region.window == Window(0, 0, 20, 10)
        with pytest.raises(AllNodataError):
            estimate_stretch(src, region)


@pytest.mark.parametrize("window", [
    Window(0, 0, 20000, 15000), Window(123, 456, 50000, 3000), Window(0, 0, 1025, 1024),
    Window(7, 9, 100, 20000), Window(0, 0, 1_000_000, 2), Window(0, 0, 1_000_000, 1_000_000),
])
def test_sample_windows_bounded(window):
    windows = sample_windows(Region(window))
    pixels = sum(int(w.width) * int(w.height) for w in windows)
    assert 0 < pixels <= 1.05 * SAMPLE_PIXELS
    assert len(windows) <= SAMPLE_GRID**2
    x0, y0 = window.col_off, window.row_off
    x1, y1 = x0 + window.width, y0 + window.height
    cover = set()
    for w in windows:
        assert x0 <= w.col_off and w.col_off + w.width <= x1 and y0 <= w.row_off and w.row_off + w.height <= y1
        assert w.width > 0 and w.height > 0
        cover.add((w.col_off, w.row_off))
    assert len(cover) == len(windows)  # no window twice
    # spread over the region: touches both its first and its last columns and rows
    assert min(w.col_off for w in windows) == x0 and max(w.col_off + w.width for w in windows) == x1
    assert min(w.row_off for w in windows) == y0 and max(w.row_off + w.height for w in windows) == y1
    # windows do not overlap
    for i, a in enumerate(windows):
        for b in windows[i + 1:]:
            assert (a.col_off + a.width <= b.col_off or b.col_off + b.width <= a.col_off
                    or a.row_off + a.height <= b.row_off or b.row_off + b.height <= a.row_off)


def test_sample_windows_small_region_read_whole():
    for window in (Window(0, 0, 1024, 1024), Window(5, 6, 10, 10), Window(0, 0, 1, 1)):
        assert sample_windows(Region(window)) == [window]


def test_sample_of_a_big_square_region_is_substantial():
    windows = sample_windows(Region(Window(0, 0, 40000, 40000)))
    assert sum(int(w.width) * int(w.height) for w in windows) >= 0.9 * SAMPLE_PIXELS


def test_sample_of_a_thin_region_is_substantial():
    windows = sample_windows(Region(Window(0, 0, 100000, 20)))
    assert sum(int(w.width) * int(w.height) for w in windows) >= SAMPLE_PIXELS / 4


def test_stretch_of_a_big_raster_uses_the_sample(tmp_path):
    h, w = 1030, 1050  # just over SAMPLE_PIXELS: sampled, not read whole
    rng = np.random.default_rng(9)
    data = rng.integers(0, 256, (1, h, w), dtype=np.uint8)
    data[0, :, : w // 2] //= 4  # the left half is dark: the sample must cover both halves
    path = write(tmp_path / "big.tif", data)
    with RasterSource(path) as src:
        region = resolve_region(RegionSpec(), src.dataset)
        windows = sample_windows(region)
        stretch = estimate_stretch(src, region, (5.0, 95.0))
    assert sum(int(win.width) * int(win.height) for win in windows) < h * w
    values = np.concatenate([data[0, int(win.row_off):int(win.row_off + win.height),
                                  int(win.col_off):int(win.col_off + win.width)].ravel() for win in windows])
    lo, hi = np.percentile(values, [5, 95])
    assert stretch.low == pytest.approx((lo,) * 3) and stretch.high == pytest.approx((hi,) * 3)


@pytest.mark.parametrize("kwargs", [
    pytest.param({"value_range": (0.3, 0.3)}, id="value_range-low-equals-high"),
    pytest.param({"percentiles": (98.0, 2.0)}, id="percentiles-reversed"),
    pytest.param({"percentiles": (-5.0, 150.0)}, id="percentiles-out-of-0-100"),
])
def test_bad_stretch_parameters_are_parameter_errors(tmp_path, kwargs):
    data = np.random.default_rng(0).integers(0, 255, (3, 30, 30), dtype=np.uint8)
    path = write(tmp_path / "small.tif", data)
    model = build_model("test", classes=["water", "tree"], sentence=None)
    with pytest.raises(ParameterError):
        segment(SegmentRequest(raster=str(path), out_dir=str(tmp_path / "out"), vectorise=False, **kwargs), model)


# --------------------------------------------------------------------------------------------
# region
# --------------------------------------------------------------------------------------------

@pytest.fixture
def utm_raster(tmp_path):
    """300 x 200 pixels of 10 m: x 500000..503000, y 4998000..5000000 (EPSG:32633)."""
    return write(tmp_path / "utm.tif", np.ones((3, 200, 300), np.uint8))


def region_of(path, **spec):
    with rasterio.open(path) as ds:
        return resolve_region(RegionSpec(**spec), ds)


def test_whole_region(utm_raster):
    region = region_of(utm_raster)
    assert region.window == Window(0, 0, 300, 200) and region.geometries is None
    assert region.mask(region.window, T) is None
    assert (region.width, region.height) == (300, 200)


@pytest.mark.parametrize("bbox,window", [
    ((500100, 4999000, 500500, 4999800), Window(10, 20, 40, 80)),  # on pixel edges
    ((500105, 4999005, 500495, 4999795), Window(10, 20, 40, 80)),  # partial pixels are included
    ((499000, 4999000, 500100, 5001000), Window(0, 0, 10, 100)),  # partly outside: clipped
    ((400000, 4900000, 600000, 5100000), Window(0, 0, 300, 200)),  # around the raster
    ((502990, 4998000, 503000, 4998010), Window(299, 199, 1, 1)),  # the last pixel
])
def test_bbox_in_raster_crs(utm_raster, bbox, window):
    assert region_of(utm_raster, bbox=bbox).window == window
    assert region_of(utm_raster, bbox=bbox, bbox_crs="EPSG:32633").window == window


def test_bbox_in_epsg4326(utm_raster):
    to_ll = pyproj.Transformer.from_crs(32633, 4326, always_xy=True)
    xs, ys = to_ll.transform([500503, 501497, 501497, 500503], [4998503, 4998503, 4999497, 4999497])
    bbox = (min(xs), min(ys), max(xs), max(ys))
    # expected: the bbox's envelope in UTM (densely sampled edges), widened to whole pixels
    to_utm = pyproj.Transformer.from_crs(4326, 32633, always_xy=True)
    left, bottom, right, top = to_utm.transform_bounds(*bbox, densify_pts=2001)
    expected = Window(math.floor((left - T.c) / 10), math.floor((T.f - top) / 10),
                      math.ceil((right - T.c) / 10) - math.floor((left - T.c) / 10),
                      math.ceil((T.f - bottom) / 10) - math.floor((T.f - top) / 10))
    region = region_of(utm_raster, bbox=bbox, bbox_crs="EPSG:4326")
    assert region.window == expected
    assert region.geometries is None
    # the original UTM rectangle lies inside
    assert region.window.col_off <= 50 and region.window.col_off + region.window.width >= 150
    assert region.window.row_off <= 50 and region.window.row_off + region.window.height >= 150


def _centre_mask(polys, window):
    cols, rows = np.meshgrid(np.arange(window.width) + window.col_off + 0.5,
                             np.arange(window.height) + window.row_off + 0.5)
    x, y = T.c + cols * T.a, T.f + rows * T.e
    return np.any([shapely.contains_xy(p, x, y) for p in polys], axis=0)


def test_polygon_region_mask(utm_raster):
    tri = Polygon([(500123.4, 4999876.6), (501007.7, 4999512.3), (500302.1, 4998733.9)])
    far = Polygon([(502501.3, 4998201.2), (502777.7, 4998201.2), (502777.7, 4998398.8), (502501.3, 4998398.8)])
    region = region_of(utm_raster, polygons=[mapping(tri), mapping(far)])
    win = region.window
    minx, miny, maxx, maxy = shapely.union_all([tri, far]).bounds
    assert win == Window(math.floor((minx - T.c) / 10), math.floor((T.f - maxy) / 10),
                         math.ceil((maxx - T.c) / 10) - math.floor((minx - T.c) / 10),
                         math.ceil((T.f - miny) / 10) - math.floor((T.f - maxy) / 10))
    mask = region.mask(win, T)
    assert mask.shape == (win.height, win.width) and mask.dtype == bool
    np.testing.assert_array_equal(mask, _centre_mask([tri, far], win))
    assert 0 < mask.mean() < 0.5  # outside the polygons is False
    # a sub-window (as a tile) gives the matching piece of the same mask
    sub = Window(win.col_off + 5, win.row_off + 7, 30, 20)
    np.testing.assert_array_equal(region.mask(sub, T), mask[7:27, 5:35])


def test_polygon_region_in_epsg4326_and_clipped(utm_raster):
    poly = Polygon([(499800.3, 4999300.3), (500606.6, 4999950.1), (500777.7, 4999111.2)])  # crosses the west edge
    to_ll = pyproj.Transformer.from_crs(32633, 4326, always_xy=True)
    ll = Polygon([to_ll.transform(x, y) for x, y in poly.exterior.coords])
    region = region_of(utm_raster, polygons=[mapping(ll)], polygons_crs="EPSG:4326")
    assert region.window.col_off == 0  # clipped to the raster
    np.testing.assert_array_equal(region.mask(region.window, T), _centre_mask([poly], region.window))


def test_region_without_crs(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rasterio warns about the missing georeferencing
        path = write(tmp_path / "nocrs.tif", np.ones((3, 10, 10), np.uint8), crs=None, transform=Affine.identity())
        assert region_of(path).window == Window(0, 0, 10, 10)
        with pytest.raises(RegionError, match="no CRS"):
            region_of(path, bbox=(0, 0, 5, 5))


TINY = Polygon([(500001, 4999999), (500004, 4999999), (500004, 4999996)])  # inside pixel (0, 0), misses its centre


@pytest.mark.parametrize("spec,fragment", [
    ({"bbox": (500500, 4999000, 500100, 4999800)}, "empty or invalid"),
    ({"bbox": (500100, 4999000, 500100, 4999800)}, "empty or invalid"),
    ({"bbox": (600000, 4999000, 600100, 4999800)}, "outside"),
    ({"bbox": (499000, 4999000, 500000, 4999800)}, "outside"),  # touches the west edge only
    ({"bbox": (float("nan"), 4999000, 500100, 4999800)}, "empty or invalid"),
    ({"bbox": (float("nan"), 45.0, 15.0, 46.0), "bbox_crs": "EPSG:4326"}, "invalid|outside"),
    ({"bbox": (14.0, 45.0, 15.0, 46.0), "bbox_crs": "EPSG:999999"}, "not a CRS"),
    ({"bbox": (14.0, 45.0, 15.0, 46.0), "bbox_crs": "no such crs"}, "not a CRS"),
    ({"bbox": (-10.0, -50.0, -9.0, -49.0), "bbox_crs": "EPSG:4326"}, "outside"),
    ({"polygons": [{"type": "Polygon", "coordinates": []}]}, "empty"),
    ({"polygons": [{"type": "Polygon", "coordinates": [[[1, 2]]]}]}, "valid GeoJSON"),
    ({"polygons": [{"type": "Blob", "coordinates": [0, 0]}]}, "valid GeoJSON"),
    ({"polygons": [mapping(TINY)]}, "no pixel centre"),
    ({"polygons": [mapping(Polygon([(0, 0), (10, 0), (10, 10)]))]}, "outside"),
    ({"polygons": [mapping(TINY)], "polygons_crs": "EPSG:999999"}, "not a CRS"),
])
def test_region_errors(utm_raster, spec, fragment):
    with pytest.raises(RegionError, match=fragment):
        region_of(utm_raster, **spec)


def test_region_errors_round_coordinates_to_what_the_crs_warrants(tmp_path):
    """QGIS extents arrive with 14 digits; messages show degrees to 6 decimals, metres and feet to 2."""
    odd = Affine(10, 0, 500000.123456789012, 0, -10, 5000000.987654321098)
    path = write(tmp_path / "odd.tif", np.ones((3, 200, 300), np.uint8), transform=odd)
    bounds = "raster bounds (500000.12, 4998000.99, 503000.12, 5000000.99) in EPSG:32633"
    with pytest.raises(RegionError) as info:
        region_of(path, bbox=(-10.123456789012345, -50.98765432109876, -9.000000000000012, -49.1),
                  bbox_crs="EPSG:4326")
    assert str(info.value) == f"bbox (-10.123457, -50.987654, -9.0, -49.1) in EPSG:4326 lies outside {path} ({bounds})"
    with pytest.raises(RegionError) as info:
        region_of(path, bbox=(600000.123456789, 4999000.000000001, 600100.98765432, 4999800.5))
    assert str(info.value).startswith("bbox (600000.12, 4999000.0, 600100.99, 4999800.5) in EPSG:32633 lies outside")
    far = Polygon([(0.123456789, 0.987654321), (10.5, 0.0), (10.5, 10.000000001)])
    with pytest.raises(RegionError, match=r"region polygons \(bounds \(0\.12, 0\.0, 10\.5, 10\.0\)\) lies outside"):
        region_of(path, polygons=[mapping(far)])
    feet = CRS.from_epsg(2263)  # NAD83 / New York Long Island, US survey feet
    path = write(tmp_path / "feet.tif", np.ones((3, 20, 30), np.uint8), crs=feet,
                 transform=Affine(1, 0, 1000000.0, 0, -1, 200000.0))
    with pytest.raises(RegionError, match=r"bbox \(0\.33, 0\.0, 1\.67, 1\.0\) in EPSG:2263 lies outside"):
        region_of(path, bbox=(1 / 3, 0.0, 5 / 3, 1.0))


# --------------------------------------------------------------------------------------------
# areas
# --------------------------------------------------------------------------------------------

def test_geographic_row_areas():
    t = Affine(0.01, 0.0, 10.0, 0.0, -0.01, 60.0)
    crs = CRS.from_epsg(4326)
    areas = row_pixel_areas_m2(crs, t, 0, 200)  # latitude 60 down to 58
    assert areas.shape == (200,)
    assert (np.diff(areas) > 0).all()  # area decreases with latitude
    geod = pyproj.Geod(ellps="WGS84")
    a, _ = geod.polygon_area_perimeter([10.0, 10.01, 10.01, 10.0], [60.0, 60.0, 59.99, 59.99])
    assert areas[0] == pytest.approx(abs(a), rel=1e-8)  # geodesic vs parallel edges: ~3e-9
    assert pixel_area_m2(crs, t) is None
    # row offsets
    np.testing.assert_allclose(row_pixel_areas_m2(crs, t, 50, 3), areas[50:53], rtol=1e-12)
    # the southern hemisphere mirrors the northern one
    south = row_pixel_areas_m2(crs, Affine(0.01, 0.0, 10.0, 0.0, -0.01, -59.99), 0, 1)
    assert south[0] == pytest.approx(areas[0], rel=1e-9)
    # about cos(latitude) times the equator's (within 2%: on the ellipsoid a degree of latitude is
    # about 1% longer at 60 degrees than at the equator)
    equator = row_pixel_areas_m2(crs, Affine(0.01, 0.0, 10.0, 0.0, -0.01, 0.005), 0, 1)[0]
    assert areas[0] / equator == pytest.approx(math.cos(math.radians(59.995)), rel=0.02)
    # accepts WKT as well as a CRS object
    np.testing.assert_allclose(row_pixel_areas_m2(crs.to_wkt(), t, 0, 2), areas[:2])


def test_projected_row_areas_use_the_unit_factor():
    feet = row_pixel_areas_m2(CRS.from_epsg(2263), Affine(2.0, 0, 980000.0, 0, -2.0, 200000.0), 0, 4)
    np.testing.assert_allclose(feet, (2 * FT_US) ** 2, rtol=1e-12)
    metres = row_pixel_areas_m2(UTM33, T, 10, 3)
    np.testing.assert_array_equal(metres, [100.0, 100.0, 100.0])
    assert pixel_area_m2(CRS.from_epsg(2263), Affine(3.0, 0, 0, 0, -3.0, 0)) == pytest.approx(9 * FT_US**2)
    assert pixel_area_m2(None, Affine(0.5, 0, 0, 0, -0.5, 0)) == 0.25  # no CRS: metres


# --------------------------------------------------------------------------------------------
# decide()
# --------------------------------------------------------------------------------------------

def test_decide_softmax():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (5, 20, 30)).astype(np.float32)
    valid = np.ones((20, 30), bool)
    classes, scores = decide(logits, valid, SOFTMAX, None)
    assert classes.dtype == np.uint8 and scores.dtype == np.float32
    np.testing.assert_array_equal(classes, logits.argmax(axis=0) + 1)
    np.testing.assert_allclose(scores, special.softmax(logits.astype(np.float64), axis=0).max(axis=0), rtol=1e-6)
    assert (scores >= 0.2).all() and (scores <= 1).all()
    # a threshold turns low scores into unlabelled (0)
    tclasses, tscores = decide(logits, valid, SOFTMAX, 0.6)
    np.testing.assert_array_equal(tscores, scores)
    np.testing.assert_array_equal(tclasses, np.where(scores < 0.6, UNLABELLED, classes))
    assert (tclasses == UNLABELLED).any() and (tclasses != UNLABELLED).any()


def test_decide_softmax_is_stable_and_single_class_is_certain():
    logits = np.array([[[1000.0, -1000.0]], [[999.0, -1000.0]]], np.float32)
    classes, scores = decide(logits, np.ones((1, 2), bool), SOFTMAX, None)
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores, [[1 / (1 + math.exp(-1)), 0.5]], rtol=1e-6)
    classes, scores = decide(np.zeros((1, 3, 3), np.float32) - 5, np.ones((3, 3), bool), SOFTMAX, None)
    assert (classes == 1).all() and (scores == 1).all()


def test_decide_sigmoid_threshold():
    logits = np.array([[[-3.0, -0.1, 0.0, 0.1, 3.0]]], np.float32)
    valid = np.ones((1, 5), bool)
    classes, scores = decide(logits, valid, SIGMOID, None)
    np.testing.assert_allclose(scores[0], special.expit(logits[0, 0].astype(np.float64)), rtol=1e-6)
    # default threshold 0.5; a score of exactly 0.5 is not under it
    np.testing.assert_array_equal(classes[0], [0, 0, 1, 1, 1])
    classes, _ = decide(logits, valid, SIGMOID, 0.9)
    np.testing.assert_array_equal(classes[0], [0, 0, 0, 0, 1])
    classes, _ = decide(logits, valid, SIGMOID, 0.0)
    np.testing.assert_array_equal(classes[0], [1, 1, 1, 1, 1])


def test_decide_invalid_pixels():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 1, (3, 8, 9)).astype(np.float32)
    valid = rng.random((8, 9)) > 0.3
    for activation, threshold in ((SOFTMAX, None), (SOFTMAX, 0.99), (SIGMOID, None)):
        classes, scores = decide(logits, valid, activation, threshold)
        np.testing.assert_array_equal(classes[~valid], NODATA)
        assert np.isnan(scores[~valid]).all() and not np.isnan(scores[valid]).any()
        assert (classes[valid] != NODATA).all()


def test_decide_sigmoid_large_negative_logit_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        classes, scores = decide(np.array([[[-200.0, 200.0]]], np.float32), np.ones((1, 2), bool), SIGMOID, None)
    np.testing.assert_array_equal(classes, [[0, 1]])
