"""Training data from a raster and a polygon layer (rsseg.datasets.labels, blocks, layer_chips), on real data.

Atlanta: 43 SpaceNet building footprints over a 900x900 WorldView pan image (EPSG:32616), read as
shipped and as a copy reprojected to EPSG:4326 (with pyproj, not the code under test), checked
against point-in-polygon at pixel centres. NEON: 61 tree-crown pixel boxes over a 400x400 RGB
orthophoto (EPSG:32617), written as a GeoPackage in EPSG:4326 with a string field "kind" and an
integer field "code", so the expected labels are exact pixel rectangles.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.windows import Window
from shapely.geometry import box, mapping, shape

from rsseg.datasets.blocks import (
    SpatialSplit,
    block_split,
    chebyshev_gap,
    polygon_split,
    side_split,
    to_pixels,
    window_box,
)
from rsseg.datasets.chips import chip_windows, labelled_fraction
from rsseg.datasets.labels import (
    LabelSpec,
    default_class_table,
    field_values,
    layer_fields,
    load_labels,
    raster_grid,
    read_polygons,
)
from rsseg.datasets.layer_chips import balanced_order, chip_weights, layer_chips, plan_chips, read_chips
from rsseg.datasets.semantic import DatasetError
from rsseg.errors import ParameterError, RssegError

DATA = Path(__file__).parents[1] / "data"
ATLANTA = DATA / "spacenet_atlanta_pan.tif"  # 900 x 900 uint16, EPSG:32616, 0.5 m
BUILDINGS = DATA / "spacenet_atlanta_buildings.geojson"  # 43 polygons, EPSG:32616, fields osm_id, building
NEON = DATA / "neon_osbs_rgb.tif"  # 400 x 400 x 3 uint8, EPSG:32617, 0.1 m, nodata 255
BOXES = DATA / "neon_osbs_tree_boxes.csv"  # 61 pixel boxes xmin, ymin, xmax, ymax
AREA_COLS = 240  # the NEON labelled area: columns 0..239, all rows


def _write(path: Path, geometries, properties, crs, driver: str = "GPKG", layer=None, geometry="Polygon") -> Path:
    fields = {k: ("int" if isinstance(v, int) else "str") for k, v in (properties[0] if properties else {}).items()}
    with fiona.open(path, "w", driver=driver, crs=crs, layer=layer,
                    schema={"geometry": geometry, "properties": fields}) as out:
        for geom, props in zip(geometries, properties):
            out.write({"geometry": mapping(geom), "properties": props})
    return path


def _reproject(geometry, src: str, dst: str):
    move = Transformer.from_crs(src, dst, always_xy=True)
    return shapely.transform(geometry, lambda xy: np.column_stack(move.transform(xy[:, 0], xy[:, 1])))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    assert isinstance(exc.value, RssegError) and "\n" not in str(exc.value)
    return str(exc.value)


@pytest.fixture(scope="module")
def neon(tmp_path_factory) -> dict:
    """The NEON boxes as a EPSG:4326 GeoPackage (kind: "large"/"small" crowns, code 2/1) and a labelled-area
    layer (the west 60%) in EPSG:3857, plus the boxes and the expected labels."""
    folder = tmp_path_factory.mktemp("neon")
    with rasterio.open(NEON) as src:
        transform, crs = src.transform, src.crs.to_string()
    with open(BOXES, newline="") as f:
        boxes = [tuple(int(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")) for r in csv.DictReader(f)]
    areas = [(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes]
    median = float(np.median(areas))
    kinds = ["large" if a >= median else "small" for a in areas]
    def geo(x0, y0, x1, y1):  # noqa: E306 - pixel edges -> a polygon in the raster's CRS
        return shapely.Polygon([transform * (x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))])
    polygons = [_reproject(geo(*b), crs, "EPSG:4326") for b in boxes]
    props = [{"kind": k, "code": 2 if k == "large" else 1} for k in kinds]
    labels = _write(folder / "crowns.gpkg", polygons, props, "EPSG:4326")
    area = _write(folder / "area.gpkg", [_reproject(geo(0, 0, AREA_COLS, 400), crs, "EPSG:3857")], [{"name": "a"}],
                  "EPSG:3857")
    # expected sparse labels by the documented rule: the smaller box wins, ties go to the later feature
    expected = np.full((400, 400), 255, dtype=np.uint8)
    for i in sorted(range(len(boxes)), key=lambda i: -areas[i]):
        x0, y0, x1, y1 = boxes[i]
        expected[y0:y1, x0:x1] = {"large": 0, "small": 1}[kinds[i]]
    return {"folder": folder, "labels": labels, "area": area, "boxes": boxes, "kinds": kinds, "expected": expected,
            "polygon": geo}


# --- rasterised labels ---------------------------------------------------------------------------------------


def test_neon_boxes_from_a_4326_geopackage_land_on_their_pixels(neon):
    spec = LabelSpec(neon["labels"], "kind")
    labels = load_labels(NEON, spec)
    assert read_polygons(neon["labels"], None, labels.grid, "kind").crs.to_epsg() == 4326 != labels.grid.crs.to_epsg()
    assert labels.class_names == ("large", "small") and labels.background is None
    assert labels.features == (neon["kinds"].count("large"), neon["kinds"].count("small"))
    whole = labels.rasterize_all()
    assert whole.dtype == np.uint8 and np.array_equal(whole, neon["expected"])
    assert labels.pixel_counts == tuple(int((whole == i).sum()) for i in range(2))
    # any window, aligned or not, partly outside or not, is the same pixels as the whole raster
    for window in (Window(0, 0, 128, 128), Window(37, 201, 150, 64), Window(350, 350, 50, 50), Window(399, 0, 1, 400)):
        rows, cols = window.toslices()
        assert np.array_equal(labels.rasterize_window(window), whole[rows, cols])
    beyond = labels.rasterize_window(Window(380, 380, 40, 40))  # 20 px past the edge: nothing there
    assert beyond.shape == (40, 40) and np.array_equal(beyond[:20, :20], whole[380:, 380:])
    assert (beyond[20:, :] == 255).all() and (beyond[:, 20:] == 255).all()


def test_class_table_default_edited_merged_and_integer_fields(neon):
    assert field_values(neon["labels"], "code") == {1: neon["kinds"].count("small"), 2: neon["kinds"].count("large")}
    assert default_class_table([3, 1, None, 10, 1]) == {1: "1", 3: "3", 10: "10"}  # numbers by value, not text
    assert layer_fields(neon["labels"]) == {"kind": "str", "code": "int"}
    integers = load_labels(NEON, LabelSpec(neon["labels"], "code"))
    assert integers.class_names == ("1", "2") and integers.class_values == ((1,), (2,))
    small_is_1 = np.where(neon["expected"] == 255, 255, 1 - neon["expected"])  # kind index 1 (small) -> code 1 -> 0
    assert np.array_equal(integers.rasterize_all(), small_is_1)
    edited = load_labels(NEON, LabelSpec(neon["labels"], "code", classes={"2": "big crown", 1: "small crown"}))
    assert edited.class_names == ("big crown", "small crown")  # table order; "2" matches the integer 2
    assert np.array_equal(edited.rasterize_all(), neon["expected"])
    merged = load_labels(NEON, LabelSpec(neon["labels"], "kind", classes={"small": "tree", "large": "tree"}))
    assert merged.class_names == ("tree",) and merged.class_values == (("small", "large"),)
    assert np.array_equal(merged.rasterize_all(), np.where(neon["expected"] == 255, 255, 0))
    dropped = load_labels(NEON, LabelSpec(neon["labels"], "kind", classes={"small": None, "large": "large"}))
    assert dropped.class_names == ("large",) and dropped.left_out == neon["kinds"].count("small")
    large_only = np.full((400, 400), 255, dtype=np.uint8)
    for (x0, y0, x1, y1), kind in zip(neon["boxes"], neon["kinds"]):
        if kind == "large":
            large_only[y0:y1, x0:x1] = 0
    assert np.array_equal(dropped.rasterize_all(), large_only)  # the small crowns no longer cover the large


def test_area_mode_background_inside_the_labelled_area_ignore_outside(neon):
    labels = load_labels(NEON, LabelSpec(neon["labels"], "kind", mode="area", area_path=neon["area"]))
    assert labels.class_names == ("background", "large", "small") and labels.background == 0
    whole = labels.rasterize_all()
    boxes = neon["expected"] != 255
    assert np.array_equal(whole[boxes], neon["expected"][boxes] + 1)  # label polygons count everywhere
    assert (whole[:, :AREA_COLS][~boxes[:, :AREA_COLS]] == 0).all()  # inside the area: background
    assert (whole[:, AREA_COLS:][~boxes[:, AREA_COLS:]] == 255).all()  # outside: ignored
    assert labels.pixel_counts[0] == int((~boxes[:, :AREA_COLS]).sum())
    # a class table naming a value "background" merges it into class 0
    renamed = load_labels(NEON, LabelSpec(neon["labels"], "kind", classes={"small": "background", "large": "crown"},
                                          mode="area", area_path=neon["area"]))
    assert renamed.class_names == ("background", "crown")


def test_area_mode_without_an_area_layer_is_the_whole_raster():
    labels = load_labels(ATLANTA, LabelSpec(BUILDINGS, "building", mode="area"))
    assert labels.class_names == ("background", "yes") and labels.features == (0, 43)
    whole = labels.rasterize_all()
    assert set(np.unique(whole)) == {0, 1} and labels.pixel_counts == (int((whole == 0).sum()), int((whole == 1).sum()))


@pytest.mark.parametrize("small_first", [True, False])
def test_overlapping_polygons_the_smaller_wins_whatever_the_order(tmp_path, small_first):
    grid = raster_grid(NEON)
    park = shapely.Polygon([grid.transform * xy for xy in ((50, 50), (250, 50), (250, 250), (50, 250))])
    tree = shapely.Polygon([grid.transform * xy for xy in ((100, 100), (140, 100), (140, 140), (100, 140))])
    shed = shapely.Polygon([grid.transform * xy for xy in ((200, 200), (300, 200), (300, 300), (200, 300))])
    features = [(tree, "tree"), (park, "park"), (shed, "shed")]  # the shed sticks out of the park
    if not small_first:
        features.reverse()
    path = _write(tmp_path / "nested.geojson", [g for g, _ in features], [{"what": k} for _, k in features],
                  "EPSG:32617", driver="GeoJSON")
    labels = load_labels(NEON, LabelSpec(path, "what"))
    assert labels.class_names == ("park", "shed", "tree")
    whole = labels.rasterize_all()
    assert (whole[100:140, 100:140] == 2).all()  # tree (1,600 px) inside the park (40,000 px)
    assert (whole[200:250, 200:250] == 1).all()  # shed (10,000 px) over the park's corner
    assert (whole[50:100, 50:250] == 0).all() and whole[0, 0] == 255


def test_atlanta_buildings_agree_with_point_in_polygon_also_reprojected(tmp_path):
    """The rasterised mask vs shapely's point-in-polygon at every pixel centre, from the layer as shipped
    (EPSG:32616, the raster's CRS) and from a copy in EPSG:4326 (so reprojection is exercised)."""
    with fiona.open(BUILDINGS) as src:
        assert src.crs.to_epsg() == 32616 and len(src) == 43
        footprints = [shape(f.geometry) for f in src]
        props = [dict(f.properties) for f in src]
    copy = _write(tmp_path / "buildings_4326.geojson", [_reproject(g, "EPSG:32616", "EPSG:4326") for g in footprints],
                  [{"building": p["building"], "osm_id": int(p["osm_id"])} for p in props], "EPSG:4326",
                  driver="GeoJSON")
    grid = raster_grid(ATLANTA)
    rows, cols = np.mgrid[0:grid.height, 0:grid.width]
    xs, ys = grid.transform * (cols.ravel() + 0.5, rows.ravel() + 0.5)
    union = shapely.union_all(footprints)
    reference = shapely.contains_xy(union, xs, ys).reshape(grid.height, grid.width)
    assert 0.03 < reference.mean() < 0.06  # about 4% of the scene is roof
    for path in (BUILDINGS, copy):
        labels = load_labels(ATLANTA, LabelSpec(path, "building"))
        mask = labels.rasterize_all() == 0
        agreement = float((mask == reference).mean())
        iou = float((mask & reference).sum() / (mask | reference).sum())
        assert agreement >= 0.99 and iou >= 0.98, (path, agreement, iou)
    with fiona.open(copy) as src:
        assert src.crs.to_epsg() == 4326


# --- errors before training ----------------------------------------------------------------------------------


def test_missing_field_lists_the_fields(neon):
    with pytest.raises(DatasetError) as exc:
        load_labels(NEON, LabelSpec(neon["labels"], "class"))
    message = _one_line(exc)
    assert "crowns.gpkg" in message and "no field 'class'" in message and "'kind', 'code'" in message
    with pytest.raises(DatasetError, match="did you mean 'kind'"):
        load_labels(NEON, LabelSpec(neon["labels"], "Kind"))


def test_labels_off_the_raster_name_both_extents(tmp_path):
    with fiona.open(BUILDINGS) as src:
        moved = [shapely.affinity.translate(shape(f.geometry), 10_000, 0) for f in src]
    path = _write(tmp_path / "moved.geojson", moved, [{"building": "yes"}] * len(moved), "EPSG:32616", "GeoJSON")
    with pytest.raises(DatasetError) as exc:
        load_labels(ATLANTA, LabelSpec(path, "building"))
    message = _one_line(exc)
    assert "does not overlap the raster" in message and "moved.geojson" in message and "EPSG:32616" in message
    assert "(733601.00, 3724689.00, 734051.00, 3725139.00)" in message  # the raster's extent
    assert "(743601.00, 3724689.00, 744051.00, 3725139.00)" in message  # the labels' extent, 10 km east


def test_a_class_without_labelled_pixels_is_named(tmp_path, neon):
    grid = raster_grid(NEON)
    inside = neon["polygon"](10, 10, 50, 50)
    outside = shapely.affinity.translate(inside, 500, 0)  # 500 m east of the 40 m scene
    speck = neon["polygon"](200.6, 200.6, 200.9, 200.9)  # inside the raster but covers no pixel centre
    path = _write(tmp_path / "three.gpkg", [inside, outside, speck],
                  [{"kind": "tree"}, {"kind": "shrub"}, {"kind": "speck"}], grid.crs.to_string())
    with pytest.raises(DatasetError) as exc:
        load_labels(NEON, LabelSpec(path, "kind"))
    message = _one_line(exc)
    assert "class 'shrub'" in message and "class 'speck'" in message and "class 'tree'" not in message
    assert "no labelled pixel in the raster" in message and "field 'kind'" in message
    assert load_labels(NEON, LabelSpec(path, "kind", classes={"tree": "tree", "shrub": None, "speck": None}),
                       ).pixel_counts == (1600,)
    unchecked = load_labels(NEON, LabelSpec(path, "kind"), count_pixels=False)  # a big raster's choice
    assert unchecked.pixel_counts is None and unchecked.num_classes == 3


def test_a_crs_on_one_side_only_cannot_be_reprojected(tmp_path, neon):
    grid = raster_grid(NEON)
    crowns = [neon["polygon"](*b) for b in neon["boxes"][:5]]
    shapefile = _write(tmp_path / "no_crs.shp", crowns, [{"kind": "tree"}] * 5, None, driver="ESRI Shapefile")
    with pytest.raises(DatasetError) as exc:
        load_labels(NEON, LabelSpec(shapefile, "kind"))
    message = _one_line(exc)
    assert "neon_osbs_rgb.tif has a CRS (EPSG:32617) but label layer" in message and "no_crs.shp" in message
    with rasterio.open(NEON) as src:
        profile, pixels = src.profile, src.read()
    profile.update(crs=None)
    bare = tmp_path / "no_crs.tif"
    with rasterio.open(bare, "w", **profile) as out:
        out.write(pixels)
    with pytest.raises(DatasetError) as exc:
        load_labels(bare, LabelSpec(neon["labels"], "kind"))
    assert "crowns.gpkg has a CRS (EPSG:4326) but" in _one_line(exc) and "no_crs.tif has none" in str(exc.value)
    # neither has a CRS: the coordinates are taken as the raster's own
    assert load_labels(bare, LabelSpec(shapefile, "kind")).pixel_counts[0] > 0
    # a CRS whose coordinates cannot exist: UTM 16N a million kilometres out, onto UTM 17N
    far = _write(tmp_path / "far.gpkg", [box(1e9, 1e9, 1e9 + 10, 1e9 + 10)], [{"kind": "tree"}], "EPSG:32616")
    with pytest.raises(DatasetError) as exc:
        load_labels(NEON, LabelSpec(far, "kind"))
    assert "far.gpkg" in _one_line(exc) and "EPSG:32617" in str(exc.value) and "feature 0" in str(exc.value)
    assert grid.crs.to_epsg() == 32617


def test_layers_that_are_not_polygons_or_not_readable(tmp_path, neon):
    grid = raster_grid(NEON)
    centre = grid.transform * (200, 200)
    points = _write(tmp_path / "points.geojson", [shapely.Point(centre)], [{"kind": "tree"}], "EPSG:32617",
                    driver="GeoJSON", geometry="Point")
    with pytest.raises(DatasetError, match=r"points.geojson holds Point geometries; labels must be polygons"):
        load_labels(NEON, LabelSpec(points, "kind"))
    mixed = tmp_path / "mixed.geojson"
    mixed.write_text('{"type": "FeatureCollection", "features": ['
                     '{"type": "Feature", "properties": {"kind": "a"}, "geometry": '
                     '{"type": "Polygon", "coordinates": [[[-81.99, 29.68], [-81.98, 29.68], [-81.98, 29.69], '
                     '[-81.99, 29.68]]]}}, {"type": "Feature", "properties": {"kind": "b"}, "geometry": '
                     '{"type": "LineString", "coordinates": [[-81.99, 29.68], [-81.98, 29.69]]}}]}')
    with pytest.raises(DatasetError) as exc:
        load_labels(NEON, LabelSpec(mixed, "kind"))
    assert "non-polygon features (1 LineString)" in _one_line(exc)
    garbage = tmp_path / "broken.gpkg"
    garbage.write_bytes(b"this is not a GeoPackage\n" * 40)
    with pytest.raises(DatasetError) as exc:
        load_labels(NEON, LabelSpec(garbage, "kind"))
    assert "broken.gpkg: not a readable vector layer" in _one_line(exc)
    with pytest.raises(DatasetError, match="label layer not found: .*missing.gpkg"):
        load_labels(NEON, LabelSpec(tmp_path / "missing.gpkg", "kind"))
    with pytest.raises(DatasetError, match="raster not found"):
        load_labels(tmp_path / "missing.tif", LabelSpec(neon["labels"], "kind"))


def test_layers_inside_a_geopackage_and_values_the_table_lacks(tmp_path, neon):
    grid = raster_grid(NEON)
    two = tmp_path / "two.gpkg"
    crowns = [neon["polygon"](*b) for b in neon["boxes"][:4]]
    _write(two, crowns, [{"kind": "tree"}, {"kind": "Tre"}, {"kind": "tree"}, {"kind": "Tre"}], grid.crs.to_string(),
           layer="crowns")
    _write(two, crowns[:1], [{"kind": "tree"}], grid.crs.to_string(), layer="other")
    with pytest.raises(DatasetError, match=r"two.gpkg holds 2 layers \(crowns, other\); name the one"):
        load_labels(NEON, LabelSpec(two, "kind"))
    with pytest.raises(DatasetError, match="has no layer 'trees'; it holds crowns, other"):
        load_labels(NEON, LabelSpec(two, "kind", layer="trees"))
    assert load_labels(NEON, LabelSpec(two, "kind", layer="crowns")).class_names == ("Tre", "tree")
    with pytest.raises(DatasetError) as exc:
        load_labels(NEON, LabelSpec(two, "kind", layer="crowns", classes={"tree": "tree"}))
    message = _one_line(exc)
    assert "field 'kind' of" in message and "two.gpkg (layer crowns)" in message
    assert "values the class table lacks: 'Tre' (2 features)" in message and "map them to None" in message


def test_bad_specs_are_parameter_errors(neon):
    with pytest.raises(ParameterError, match="label mode 'dense' is not one of sparse, area"):
        LabelSpec(neon["labels"], "kind", mode="dense")
    with pytest.raises(ParameterError, match="applies to mode 'area' only"):
        LabelSpec(neon["labels"], "kind", area_path=neon["area"])
    with pytest.raises(ParameterError, match="ignore_index is a label value from 0 to 255"):
        LabelSpec(neon["labels"], "kind", ignore_index=300)
    with pytest.raises(ParameterError, match="must lie above the class indices 0..1"):
        load_labels(NEON, LabelSpec(neon["labels"], "kind", ignore_index=1))
    with pytest.raises(ParameterError, match="maps every value to None"):
        load_labels(NEON, LabelSpec(neon["labels"], "kind", classes={"large": None, "small": None}))
    with pytest.raises(ParameterError, match="rasterise it window by window"):
        load_labels(NEON, LabelSpec(neon["labels"], "kind")).rasterize_all(max_pixels=1000)


# --- spatial splits ------------------------------------------------------------------------------------------


def _check_split(split: SpatialSplit, width: int, height: int) -> None:
    """Every grid chip lands in exactly one set; no training chip is within the buffer of a validation chip."""
    everything = chip_windows(width, height, split.size, split.stride)
    assert sorted(split.train + split.val + split.dropped, key=lambda w: (w.row_off, w.col_off)) == everything
    assert not set(split.train) & set(split.val)
    assert min(chebyshev_gap(t, v) for t, v in itertools.product(split.train, split.val)) >= split.buffer
    assert all(window_box(v).covered_by(split.region) for v in split.val)
    assert all(not window_box(t).buffer(split.buffer - 1e-9, join_style="mitre").intersects(split.region)
               or split.buffer == 0 for t in split.train)


def test_block_split_is_deterministic_and_keeps_the_buffer():
    split = block_split(900, 900, 128, stride=64, blocks=3, val_fraction=0.25, seed=7)
    assert split == block_split(900, 900, 128, stride=64, blocks=3, val_fraction=0.25, seed=7)
    assert split.buffer == 64 and len(split.how.split("), (")) == 2  # 0.25 of 9 blocks: 2 held out
    _check_split(split, 900, 900)
    assert len(split.train) >= 40 and len(split.val) >= 4
    chosen = block_split(900, 900, 128, stride=64, blocks=(3, 3), val_blocks=[(1, 1)], buffer=96)
    _check_split(chosen, 900, 900)
    assert chosen.region.bounds == (320.0, 320.0, 576.0, 576.0)  # edges snapped to the stride
    assert len(chosen.val) == 9 and chosen.buffer == 96  # 256 px block: 3 x 3 chips at stride 64
    seeds = {block_split(900, 900, 128, blocks=4, val_fraction=0.25, seed=s).how for s in range(6)}
    assert len(seeds) > 1  # the seed decides which blocks
    with pytest.raises(ParameterError, match="buffer of 32 px is smaller than the chips' overlap of 64 px"):
        block_split(900, 900, 128, stride=64, buffer=32)
    with pytest.raises(ParameterError, match=r"validation blocks \[\(3, 0\)\] are not blocks of the 3x3 grid"):
        block_split(900, 900, 128, val_blocks=[(3, 0)])
    with pytest.raises(ParameterError, match="20 blocks down do not fit 900 px at a stride of 128 px"):
        block_split(900, 900, 128, blocks=20)
    with pytest.raises(DatasetError, match="no whole chip fits in the validation region"):
        block_split(900, 900, 400, stride=100, blocks=3, val_blocks=[(0, 0)])


def test_side_split_east_and_north():
    east = side_split(900, 900, 128, stride=64, fraction=0.25)
    _check_split(east, 900, 900)
    cut = east.region.bounds[0]
    assert cut == 704 and all(v.col_off >= cut for v in east.val)
    assert all(t.col_off + t.width <= cut - east.buffer for t in east.train)
    north = side_split(900, 900, 128, fraction=0.3, side="north", buffer=0)
    _check_split(north, 900, 900)
    assert all(t.row_off >= north.region.bounds[3] for t in north.train) and north.dropped == ()
    with pytest.raises(ParameterError, match="side 'up' is not one of east, west, north, south"):
        side_split(900, 900, 128, side="up")


def test_polygon_split_from_a_4326_layer(tmp_path, neon):
    grid = raster_grid(NEON)
    pixels = shapely.Polygon([(180, 20), (380, 60), (360, 300), (200, 260)])  # a tilted quadrilateral
    geo = shapely.affinity.affine_transform(pixels, [grid.transform.a, grid.transform.b, grid.transform.d,
                                                     grid.transform.e, grid.transform.xoff, grid.transform.yoff])
    path = _write(tmp_path / "val.gpkg", [_reproject(geo, "EPSG:32617", "EPSG:4326")], [{"name": "v"}], "EPSG:4326")
    split = polygon_split(NEON, path, 64, stride=32, buffer=40)
    assert split == polygon_split(NEON, path, 64, stride=32, buffer=40)
    _check_split(split, 400, 400)
    assert split.region.symmetric_difference(pixels).area < 1e-3  # the polygon came back to its pixels
    assert len(split.val) >= 6 and len(split.train) >= 10
    assert all(not window_box(w).intersects(pixels) or window_box(w).covered_by(pixels) for w in split.val)
    assert all(window_box(t).distance(pixels) >= 40 - 1e-6 for t in split.train)  # touching chips were dropped
    assert to_pixels(geo, grid).equals_exact(pixels, 1e-6)


# --- chips ---------------------------------------------------------------------------------------------------


def test_layer_chips_are_the_raster_and_its_labels_at_each_window(neon):
    labels = load_labels(NEON, LabelSpec(neon["labels"], "kind"))
    with rasterio.open(NEON) as src:
        image = src.read()
    invalid = (image == 255).all(axis=0)  # the image's nodata: 461 white pixels
    expected = np.where(invalid, 255, neon["expected"])
    windows = chip_windows(400, 400, 64, 32)
    chips = list(layer_chips(NEON, labels, windows, min_labelled=0.2))
    plan = plan_chips(labels, windows, min_labelled=0.2)
    assert 0 < len(chips) <= len(plan.windows) < len(windows) and plan.skipped == len(windows) - len(plan.windows)
    for chip in chips:
        rows, cols = chip.window.toslices()
        assert chip.image.shape == (3, 64, 64) and chip.image.dtype == np.uint8
        assert np.array_equal(chip.image, image[:, rows, cols]) and np.array_equal(chip.label, expected[rows, cols])
        assert labelled_fraction(chip.label, 255) >= 0.2
    assert [c.window for c in chips] == [w for w in plan.windows
                                         if labelled_fraction(expected[w.toslices()], 255) >= 0.2]
    assert np.array_equal(plan.counts.sum(axis=1), [int((neon["expected"][w.toslices()] != 255).sum())
                                                    for w in plan.windows])
    green = list(read_chips(NEON, labels, plan.windows[:2], bands=[2]))
    assert green[0].image.shape == (1, 64, 64)
    assert np.array_equal(green[0].image[0], image[1][plan.windows[0].toslices()])
    with pytest.raises(ParameterError, match=r"bands \[4\] are not in .*neon_osbs_rgb.tif \(bands 1..3\)"):
        read_chips(NEON, labels, windows, bands=[4])
    with pytest.raises(DatasetError, match="not the raster the labels were loaded for"):
        read_chips(ATLANTA, labels, windows)


def test_class_balancing_is_seeded_and_favours_the_rare_class():
    labels = load_labels(ATLANTA, LabelSpec(BUILDINGS, "building", mode="area"))
    windows = chip_windows(900, 900, 100)
    plan = plan_chips(labels, windows)
    weights = chip_weights(plan.counts)
    assert weights.shape == (81,) and abs(weights.sum() - 1) < 1e-12 and (weights > 0).all()
    roof = plan.counts[:, 1] / plan.counts.sum(axis=1)
    assert weights[np.argmax(roof)] > 3 * weights[np.argmin(roof)]  # 5.3x measured
    order = balanced_order(weights, 400, seed=3)
    assert order == balanced_order(weights, 400, seed=3) != balanced_order(weights, 400, seed=4)
    assert roof[order].mean() > 1.5 * roof.mean()  # roofs: 4.2% of a grid chip, 8.5% of this balanced draw
    assert np.allclose(chip_weights(plan.counts, power=0.0), 1 / 81)
    chips = list(layer_chips(ATLANTA, labels, windows, balance=True, count=20, seed=3))
    assert [c.window for c in chips] == [plan.windows[i] for i in balanced_order(weights, 20, seed=3)]


def test_a_split_feeds_the_chip_reader():
    labels = load_labels(ATLANTA, LabelSpec(BUILDINGS, "building", mode="area"))
    split = block_split(900, 900, 128, blocks=3, val_blocks=[(0, 2)], buffer=64)
    train = list(layer_chips(ATLANTA, labels, split.train, min_labelled=0.5))
    val = list(layer_chips(ATLANTA, labels, split.val))
    assert {c.window for c in train} <= set(split.train) and [c.window for c in val] == list(split.val)
    assert min(chebyshev_gap(t.window, v.window) for t in train for v in val) >= 64
