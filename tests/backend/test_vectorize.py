"""Tests for rsseg.raster.vectorize on real GeoTIFFs written with rasterio, and on SpaceNet data."""

from __future__ import annotations

import json
from pathlib import Path

import fiona
import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize
from scipy import ndimage
from shapely.geometry import box, shape

from rsseg.errors import Cancelled
from rsseg.progress import CancelToken
from rsseg.raster.areas import geometry_area_m2, pixel_area_m2
from rsseg.raster.vectorize import VectorizeOptions, _noded_at_seams, vectorize_classes


def from_origin(west, north, xsize, ysize):
    """North-up transform (rasterio's helper warns under affine 3)."""
    return Affine(xsize, 0.0, west, 0.0, -ysize, north)


UTM = CRS.from_epsg(32616)
UTM_T = from_origin(733600.0, 3725200.0, 1.0, 1.0)
FT_US = 1200.0 / 3937.0  # metres per US survey foot
DATA = Path(__file__).parents[1] / "data"


def write_rasters(tmp_path, cls, score=None, crs=UTM, transform=UTM_T, nodata=255):
    """Write a tiled uint8 class GeoTIFF and a float32 score GeoTIFF on the same grid."""
    if score is None:
        score = np.full(cls.shape, 0.5, np.float32)
    prof = dict(driver="GTiff", width=cls.shape[1], height=cls.shape[0], count=1, crs=crs,
                transform=transform, tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    cpath, spath = tmp_path / "classes.tif", tmp_path / "scores.tif"
    with rasterio.open(cpath, "w", dtype="uint8", nodata=nodata, **prof) as dst:
        dst.write(cls.astype(np.uint8), 1)
    with rasterio.open(spath, "w", dtype="float32", **prof) as dst:
        dst.write(np.where((cls == 0) | (cls == 255), np.nan, score).astype(np.float32), 1)
    return cpath, spath


def run(tmp_path, cpath, spath, name="out.gpkg", **opts):
    out = tmp_path / name
    stats = vectorize_classes(cpath, spath, out, {1: "building", 2: "tree", 3: "water"}, "roofs",
                              VectorizeOptions(**opts))
    with fiona.open(out, layer="polygons") as src:
        feats = [(shape(f.geometry), dict(f.properties)) for f in src]
        crs_wkt = src.crs_wkt
    return stats, feats, crs_wkt


def annulus(size=200, cy=97, cx=103, r_out=70, r_in=25):
    yy, xx = np.mgrid[:size, :size]
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    return (d2 <= r_out**2) & (d2 >= r_in**2)


def noise_classes(size=230, seed=3):
    field = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=(size, size)), 3)
    return np.digitize(field, [-0.04, 0.0, 0.04]).astype(np.uint8)  # values 0..3


def test_blob_across_seams_is_one_exact_polygon(tmp_path):
    mask = annulus()
    score = np.random.default_rng(0).random(mask.shape).astype(np.float32)
    cpath, spath = write_rasters(tmp_path, mask.astype(np.uint8), score)
    stats, small, crs_wkt = run(tmp_path, cpath, spath, "small.gpkg", chunk_size=64)
    _, big, _ = run(tmp_path, cpath, spath, "big.gpkg", chunk_size=4096)
    assert len(small) == 1 and len(big) == 1
    geom, props = small[0]
    assert geom.is_valid and geom.geom_type == "Polygon" and len(geom.interiors) == 1
    assert props["area_m2"] == pytest.approx(mask.sum() * 1.0, rel=1e-12)
    assert geom.area == pytest.approx(mask.sum(), rel=1e-12)
    assert geom.equals(big[0][0])
    expected = score[mask].astype(np.float64).mean()
    assert props["score"] == pytest.approx(expected, rel=1e-9)
    assert (props["class"], props["class_id"], props["prompt"]) == ("building", 1, "roofs")
    assert CRS.from_wkt(crs_wkt).to_epsg() == 32616
    assert [(s.class_id, s.polygons) for s in stats] == [(1, 1), (2, 0), (3, 0)]
    assert stats[0].area_m2 == pytest.approx(mask.sum())


def test_small_chunks_match_one_chunk_on_noise_map(tmp_path):
    cls = noise_classes()
    score = np.random.default_rng(1).random(cls.shape).astype(np.float32)
    cpath, spath = write_rasters(tmp_path, cls, score)
    _, small, _ = run(tmp_path, cpath, spath, "small.gpkg", chunk_size=64)
    _, big, _ = run(tmp_path, cpath, spath, "big.gpkg", chunk_size=1000)
    components = sum(ndimage.label(cls == c)[1] for c in (1, 2, 3))
    assert len(small) == len(big) == components > 50
    key = lambda f: (f[1]["class_id"], f[0].bounds, f[1]["area_m2"])  # noqa: E731
    for (g_small, p_small), (g_big, p_big) in zip(sorted(small, key=key), sorted(big, key=key)):
        assert g_small.is_valid and g_small.equals(g_big)
        assert p_small["class_id"] == p_big["class_id"]
        assert p_small["score"] == pytest.approx(p_big["score"], rel=1e-9)
    for c in (1, 2, 3):
        area = sum(p["area_m2"] for _, p in small if p["class_id"] == c)
        assert area == pytest.approx((cls == c).sum())


def test_each_polygon_has_its_component_pixel_count_and_mean_score(tmp_path):
    # counts and score sums are read off the polygons' edges, not from labelled pixels: they must equal the
    # labelled components', holes and nodata included
    cls = noise_classes(size=300, seed=7)
    cls[100:140, 50:90] = 255  # nodata: NaN scores that must not reach the regions beside it
    score = np.random.default_rng(8).random(cls.shape).astype(np.float32)
    score[cls == 255] = np.nan
    cpath, spath = write_rasters(tmp_path, cls, score)
    _, feats, _ = run(tmp_path, cpath, spath, chunk_size=64)
    expected = []
    for c in (1, 2, 3):
        labels, k = ndimage.label(cls == c)
        counts = np.bincount(labels.ravel(), minlength=k + 1)[1:]
        sums = np.bincount(labels.ravel(), weights=np.nan_to_num(score).ravel().astype(np.float64), minlength=k + 1)
        expected += [(c, int(n), s / n) for n, s in zip(counts, sums[1:])]
    got = sorted((p["class_id"], round(g.area), p["score"]) for g, p in feats)
    assert len(got) == len(expected) > 100 and any(len(g.interiors) for g, _ in feats)
    for (c, n, mean), (c2, n2, mean2) in zip(got, sorted(expected)):
        assert (c, n) == (c2, n2) and mean == pytest.approx(mean2, rel=1e-9)


# A region's outline that GEOS's coverage union of its two chunk pieces (seam at x = 64) returned with two
# zero-area slivers on the seam: the job wrote them as extra polygons with no pixels and a NaN score.
SLIVER_REGION = ("POLYGON ((0 0, 0 2, 12 2, 12 12, 13 12, 13 16, 14 16, 14 18, 15 18, 15 19, 17 19, 17 20, 19 20, "
                 "19 21, 20 21, 20 22, 22 22, 22 23, 23 23, 23 24, 25 24, 25 25, 26 25, 26 26, 28 26, 28 27, 30 27, "
                 "30 28, 31 28, 31 29, 33 29, 33 30, 34 30, 34 31, 36 31, 36 32, 37 32, 37 33, 39 33, 39 34, 40 34, "
                 "40 35, 41 35, 41 36, 43 36, 43 37, 44 37, 44 38, 46 38, 46 39, 47 39, 47 40, 49 40, 49 41, 50 41, "
                 "50 42, 51 42, 51 43, 52 43, 52 44, 54 44, 54 45, 55 45, 55 46, 56 46, 56 47, 58 47, 58 48, 59 48, "
                 "59 49, 60 49, 60 50, 62 50, 62 51, 63 51, 63 52, 64 52, 64 53, 70 53, 70 52, 75 52, 75 51, 79 51, "
                 "79 50, 83 50, 83 49, 88 49, 88 50, 89 50, 89 52, 90 52, 90 53, 91 53, 91 55, 92 55, 92 56, 93 56, "
                 "93 58, 94 58, 94 59, 95 59, 95 60, 96 60, 96 62, 97 62, 97 63, 98 63, 98 64, 128 64, 128 0, 0 0))")


def test_a_region_joined_across_a_seam_has_no_zero_area_parts(tmp_path):
    region = shapely.from_wkt(SLIVER_REGION)
    cls = rasterize([(region, 1)], out_shape=(64, 128), fill=2, transform=Affine.identity()).astype(np.uint8)
    cpath, spath = write_rasters(tmp_path, cls)
    stats, feats, _ = run(tmp_path, cpath, spath, chunk_size=64)
    assert all(g.is_valid and g.area > 0 and p["score"] == pytest.approx(0.5) for g, p in feats)
    first = [g for g, p in feats if p["class_id"] == 1]
    assert len(first) == 1 and first[0].area == (cls == 1).sum() == region.area
    assert [s.polygons for s in stats] == [1, len(feats) - 1, 0]


def test_pieces_noded_at_the_seams_form_a_coverage_and_other_edges_keep_their_vertices():
    # two pieces of one region cut by the seam at x = 64 of a 70x128 raster: their seam edges have different
    # vertices; the raster's edges (y = 0, x = 70) are no seams
    left = shapely.from_wkt("POLYGON ((60 0, 60 10, 64 10, 64 0, 60 0))")
    right = shapely.from_wkt("POLYGON ((64 3, 64 8, 70 8, 70 3, 64 3))")
    noded = _noded_at_seams(np.array([left, right]), 64, 70, 128)
    assert shapely.get_num_coordinates(noded).tolist() == [5 + 9, 5 + 4]  # one vertex per pixel corner on x = 64
    assert shapely.equals(noded, np.array([left, right])).all()
    # a coverage: GEOS's coverage union accepts it as it is (it raises on edges that do not match)
    union = shapely.coverage_union_all(noded)
    assert union.geom_type == "Polygon" and union.area == left.area + right.area and union.is_valid
    assert shapely.coverage_is_valid(noded)


def test_regions_are_cut_on_the_region_grid_and_nothing_else_changes(tmp_path):
    mask = annulus()  # 200 px wide: crosses the cut lines at 128 px
    score = np.random.default_rng(0).random(mask.shape).astype(np.float32)
    cpath, spath = write_rasters(tmp_path, mask.astype(np.uint8), score)
    _, whole, _ = run(tmp_path, cpath, spath, "whole.gpkg", chunk_size=64, region_grid=0)
    _, cut, _ = run(tmp_path, cpath, spath, "cut.gpkg", chunk_size=64, region_grid=100)  # rounded up to 128
    assert len(whole) == 1 and len(cut) == 4  # the ring cut into its four quarter-like parts
    assert all(g.is_valid and g.geom_type == "Polygon" for g, _ in cut)
    assert shapely.union_all([g for g, _ in cut]).equals(whole[0][0])
    for g, _ in cut:  # every part inside one block of the grid
        x0, y0, x1, y1 = g.bounds
        col0, row0 = (x0 - UTM_T.c) // 128, (UTM_T.f - y1) // 128
        assert ((x1 - UTM_T.c) - 1) // 128 == col0 and ((UTM_T.f - y0) - 1) // 128 == row0
    assert sum(p["area_m2"] for _, p in cut) == pytest.approx(mask.sum())
    weighted = sum(p["score"] * p["area_m2"] for _, p in cut) / mask.sum()
    assert weighted == pytest.approx(whole[0][1]["score"], rel=1e-9)  # exact means per part


def test_a_region_too_big_to_union_is_written_cut_at_the_chunk_seams(tmp_path, monkeypatch):
    import rsseg.raster.vectorize as vectorize

    mask = annulus()
    cpath, spath = write_rasters(tmp_path, mask.astype(np.uint8))
    _, whole, _ = run(tmp_path, cpath, spath, "whole.gpkg", chunk_size=64)
    monkeypatch.setattr(vectorize, "MAX_JOINED_VERTICES", 20)
    _, cut, _ = run(tmp_path, cpath, spath, "cut.gpkg", chunk_size=64)
    assert len(whole) == 1 and len(cut) > 4
    assert all(g.is_valid for g, _ in cut) and shapely.union_all([g for g, _ in cut]).equals(whole[0][0])
    assert sum(p["area_m2"] for _, p in cut) == pytest.approx(mask.sum())


def test_seam_joins_flag_a_region_as_soon_as_its_pieces_pass_the_vertex_limit(monkeypatch):
    # found mid-row, a region too big to union goes out cut at once instead of being held to the end of its
    # chunk row (held, a percolating speckle class grew with the raster's width: 586 MB at 16384 px wide)
    import rsseg.raster.vectorize as vectorize

    monkeypatch.setattr(vectorize, "MAX_JOINED_VERTICES", 10)
    joins = vectorize._SeamJoins()
    joins.weigh(np.array([1, 2, 3]), np.array([4, 4, 4]))
    assert not joins.heavy
    joins.join(np.array([1, -1]), np.array([5, 5]), np.array([2, 3]), np.array([5, 5]))  # 1 and 2: 8 vertices
    assert not joins.heavy
    joins.join(np.array([2]), np.array([5]), np.array([3]), np.array([6]))  # another class: no join
    assert not joins.heavy
    joins.join(np.array([2]), np.array([5]), np.array([3]), np.array([5]))
    assert {joins.find(r) for r in joins.heavy} == {joins.find(3)} and joins.vertices == {joins.find(1): 12}


def test_speckle_gives_one_polygon_per_region_in_batches(tmp_path, monkeypatch):
    import rsseg.raster.vectorize as vectorize

    monkeypatch.setattr(vectorize, "POLYGON_BATCH", 97)  # many batches per chunk
    monkeypatch.setattr(vectorize, "_BATCH", 500)  # many appends to the GeoPackage
    cls = np.random.default_rng(5).integers(1, 4, (150, 170)).astype(np.uint8)
    score = np.random.default_rng(6).random(cls.shape).astype(np.float32)
    cpath, spath = write_rasters(tmp_path, cls, score)
    stats, feats, _ = run(tmp_path, cpath, spath, chunk_size=64)
    labels = {c: ndimage.label(cls == c) for c in (1, 2, 3)}
    assert len(feats) == sum(k for _, k in labels.values()) > 5000
    assert [s.polygons for s in stats] == [labels[c][1] for c in (1, 2, 3)]
    assert all(g.is_valid for g, _ in feats)
    by_class = {c: sum(p["area_m2"] for _, p in feats if p["class_id"] == c) for c in (1, 2, 3)}
    assert by_class == {c: pytest.approx((cls == c).sum()) for c in (1, 2, 3)}


def test_polygonised_batches_are_bounded_by_vertices_and_lose_nothing(monkeypatch):
    import rsseg.raster.vectorize as vectorize

    def polygons(batch):
        values, xy, ring_ends, poly_ends = batch
        return values, shapely.from_ragged_array(shapely.GeometryType.POLYGON, xy, (ring_ends, poly_ends))

    cls = noise_classes()
    whole = [polygons(b) for b in vectorize._rings(cls, None, Affine.identity())]
    monkeypatch.setattr(vectorize, "POLYGON_BATCH_VERTICES", 300)
    batches = list(vectorize._rings(cls, None, Affine.identity()))
    assert len(whole) == 1 and len(batches) > 10
    for _, xy, ring_ends, poly_ends in batches:  # under the bound until the polygon that passed it
        assert len(xy) - (ring_ends[-1] - ring_ends[poly_ends[-2]]) < 300
    values, geoms = (np.concatenate(parts) for parts in zip(*map(polygons, batches)))
    assert np.array_equal(values, whole[0][0]) and shapely.equals_exact(geoms, whole[0][1], 0).all()


def test_busy_masks_are_vectorised_in_smaller_chunks(tmp_path):
    from rsseg.raster.vectorize import BUSY_CHUNK, CHUNK, chunk_size_for

    speckle = np.random.default_rng(5).integers(1, 4, (700, 900)).astype(np.uint8)
    fields = np.kron(np.random.default_rng(6).integers(0, 4, (18, 23)), np.ones((40, 40), np.uint8))[:700, :900]
    for cls, expected in ((speckle, BUSY_CHUNK), (fields, CHUNK), (annulus(), CHUNK)):
        cpath, _ = write_rasters(tmp_path, cls)
        with rasterio.open(cpath) as src:
            assert chunk_size_for(src) == expected
    cpath, spath = write_rasters(tmp_path, speckle[:300, :300])
    stats, _, _ = run(tmp_path, cpath, spath)  # chunk_size 0: chosen, and the result is still per region
    assert [s.polygons for s in stats] == [ndimage.label(speckle[:300, :300] == c)[1] for c in (1, 2, 3)]


def test_background_and_nodata_are_not_vectorised(tmp_path):
    cls = np.zeros((100, 100), np.uint8)
    cls[10:40, 10:40] = 255
    cpath, spath = write_rasters(tmp_path, cls)
    stats, feats, crs_wkt = run(tmp_path, cpath, spath, chunk_size=32)
    assert feats == [] and all(s.polygons == 0 for s in stats)
    assert CRS.from_wkt(crs_wkt).to_epsg() == 32616  # a valid, empty layer
    cls[60:70, 60:70] = 2
    for nodata in (255, None):  # 255 is never a class, even when the file declares no nodata
        cpath, spath = write_rasters(tmp_path, cls, nodata=nodata)
        _, feats, _ = run(tmp_path, cpath, spath, chunk_size=32)
        assert [p["class_id"] for _, p in feats] == [2]


def test_min_area_drops_small_polygons(tmp_path):
    cls = np.zeros((120, 120), np.uint8)
    cls[5:8, 5:8] = 1  # 9 m2
    cls[50:90, 50:90] = 1  # 1600 m2, across seams
    cpath, spath = write_rasters(tmp_path, cls)
    _, feats, _ = run(tmp_path, cpath, spath, chunk_size=64)
    assert sorted(p["area_m2"] for _, p in feats) == [9.0, 1600.0]
    stats, feats, _ = run(tmp_path, cpath, spath, chunk_size=64, min_area_m2=50.0)
    assert [p["area_m2"] for _, p in feats] == [1600.0]
    assert stats[0].polygons == 1 and stats[0].area_m2 == 1600.0


def test_simplification_reduces_vertices_and_stays_valid(tmp_path):
    mask = annulus()
    cpath, spath = write_rasters(tmp_path, mask.astype(np.uint8))
    _, raw, _ = run(tmp_path, cpath, spath, "raw.gpkg", chunk_size=64)
    _, simple, _ = run(tmp_path, cpath, spath, "simple.gpkg", chunk_size=64, simplify_tolerance=1.5)
    (g_raw, p_raw), (g_simple, p_simple) = raw[0], simple[0]
    count = lambda g: len(g.exterior.coords) + sum(len(r.coords) for r in g.interiors)  # noqa: E731
    assert count(g_simple) < count(g_raw) / 2
    assert g_simple.is_valid and g_simple.geom_type == "Polygon" and len(g_simple.interiors) == 1
    assert g_simple.area == pytest.approx(g_raw.area, rel=0.02)
    assert p_simple["area_m2"] == p_raw["area_m2"] == mask.sum()  # area reflects the pixels


def test_geographic_area_is_ellipsoidal(tmp_path):
    transform = from_origin(-84.40, 33.80, 1e-4, 1e-4)
    cls = np.zeros((150, 150), np.uint8)
    cls[20:120, 30:130] = 3  # 0.01 x 0.01 degree square across seams
    cpath, spath = write_rasters(tmp_path, cls, crs=CRS.from_epsg(4326), transform=transform)
    _, feats, crs_wkt = run(tmp_path, cpath, spath, chunk_size=64)
    assert len(feats) == 1 and CRS.from_wkt(crs_wkt).to_epsg() == 4326
    square = box(-84.397, 33.786, -84.387, 33.796)
    expected = abs(pyproj.Geod(ellps="WGS84").geometry_area_perimeter(square)[0])
    assert feats[0][1]["area_m2"] == pytest.approx(expected, rel=0.005)
    # Independent check: spherical zone formula with the mean Earth radius (~1e6 m2 here).
    r = 6371008.8
    sphere = r**2 * np.radians(0.01) * (np.sin(np.radians(33.796)) - np.sin(np.radians(33.786)))
    assert feats[0][1]["area_m2"] == pytest.approx(sphere, rel=0.01)
    assert pixel_area_m2(CRS.from_epsg(4326), transform) is None


def test_us_feet_crs_reports_square_metres(tmp_path):
    transform = from_origin(700000.0, 2900000.0, 1.0, 1.0)  # 1 US survey foot pixels
    crs = CRS.from_epsg(2249)
    cls = np.zeros((100, 100), np.uint8)
    cls[10:40, 40:70] = 1
    cpath, spath = write_rasters(tmp_path, cls, crs=crs, transform=transform)
    _, feats, crs_wkt = run(tmp_path, cpath, spath, chunk_size=32)
    assert feats[0][1]["area_m2"] == pytest.approx(900 * FT_US**2, rel=1e-9)
    assert pixel_area_m2(crs, transform) == pytest.approx(FT_US**2, rel=1e-9)
    assert geometry_area_m2(box(0, 0, 10, 10), crs) == pytest.approx(100 * FT_US**2, rel=1e-9)
    assert CRS.from_wkt(crs_wkt).to_epsg() == 2249


def test_cancel_raises_and_leaves_no_file(tmp_path):
    cpath, spath = write_rasters(tmp_path, noise_classes(150))
    out = tmp_path / "out.gpkg"
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        vectorize_classes(cpath, spath, out, {1: "a"}, "p", VectorizeOptions(chunk_size=64),
                          cancel=token)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif", "scores.tif"]

    # Cancelled mid-run: an existing output stays untouched and no temporary file is left.
    out.write_bytes(b"previous result")
    token, seen = CancelToken(), []

    def progress(p):
        seen.append((p.stage, p.done, p.total))
        token.cancel()

    with pytest.raises(Cancelled):
        vectorize_classes(cpath, spath, out, {1: "a"}, "p", VectorizeOptions(chunk_size=64),
                          progress=progress, cancel=token)
    assert seen == [("vectorise", 1, 9)]
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif", "out.gpkg", "scores.tif"]


def test_progress_reports_every_chunk(tmp_path):
    cpath, spath = write_rasters(tmp_path, noise_classes(200))
    seen = []
    vectorize_classes(cpath, spath, tmp_path / "o.gpkg", {}, "p", VectorizeOptions(chunk_size=64),
                      progress=lambda p: seen.append((p.stage, p.done, p.total)))
    assert seen == [("vectorise", i, 16) for i in range(1, 17)]


def test_spacenet_buildings_real_imagery(tmp_path):
    with rasterio.open(DATA / "spacenet_atlanta_pan.tif") as img:
        profile, transform, crs = img.profile, img.transform, img.crs
    footprints = json.loads((DATA / "spacenet_atlanta_buildings.geojson").read_text())["features"]
    mask = rasterize([(f["geometry"], 1) for f in footprints],
                     out_shape=(profile["height"], profile["width"]), transform=transform,
                     dtype="uint8")
    assert transform.a == 0.5 and mask.sum() > 10000
    cpath, spath = write_rasters(tmp_path, mask, np.full(mask.shape, 0.8, np.float32), crs=crs,
                                 transform=transform)
    stats, feats, crs_wkt = run(tmp_path, cpath, spath, chunk_size=256)
    assert len(feats) == ndimage.label(mask)[1]
    assert sum(p["area_m2"] for _, p in feats) == pytest.approx(mask.sum() * 0.25, rel=1e-9)
    assert stats[0].area_m2 == pytest.approx(mask.sum() * 0.25, rel=1e-9)
    assert all(g.is_valid and g.geom_type == "Polygon" for g, _ in feats)
    assert all(p["score"] == pytest.approx(0.8) and p["class"] == "building" for _, p in feats)
    assert CRS.from_wkt(crs_wkt) == crs or CRS.from_wkt(crs_wkt).to_epsg() == crs.to_epsg()


@pytest.mark.parametrize("crs", [UTM, None])
def test_the_geopackage_is_version_1_2_and_a_raster_without_crs_warns_about_nothing_else(tmp_path, crs):
    """GeoPackage 1.2 is what QGIS's GDAL 3.6 reads without a warning (GDAL 3.12 would write 1.4 by default)."""
    import sqlite3
    import warnings

    cpath, spath = write_rasters(tmp_path, annulus(64, 30, 30, 20, 5).astype(np.uint8), crs=crs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(tmp_path, cpath, spath)
    assert not [w for w in caught if "crs" in str(w.message)]
    with sqlite3.connect(tmp_path / "out.gpkg") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200
