"""Training labels from a polygon layer, rasterised on the fly onto a raster's grid.

Analysts label in QGIS: a polygon layer (any OGR source, any CRS) with a class field of any name,
beside the raster they want a model for. `load_labels` reads the layer once, checks it (field,
class table, geometry type, CRS, overlap with the raster, a pixel for every class) and keeps the
polygons in the raster's CRS; `LayerLabels.rasterize_window` then burns them for any window, so
chips of a large raster are labelled as they are read and the whole label raster never exists.

Rules (docs/training-from-layers.md):
- class indices follow the class table's names in order; mode "area" puts "background" at 0.
- "sparse": only pixels inside a label polygon count, all others are `ignore_index`.
- "area": inside the labelled-area polygons (the whole raster when none are given) a pixel outside
  every label polygon is background (0); outside the area it is `ignore_index`. Label polygons
  count wherever they are: a drawn polygon is a label, the area only says where "no polygon" means
  "background".
- a pixel is labelled when its centre lies inside the polygon (GDAL's rasterize rule).
- overlapping polygons: the smaller one wins (ties: the later feature). Nested labels (a tree in a
  park, a shed on a parcel) are the usual overlap, and the smaller polygon is the more specific
  label; feature order is not a property analysts control (editing, sorting and format exports
  reorder it), area is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Union

import fiona
import numpy as np
import shapely
from affine import Affine
from fiona.errors import FionaError
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.features import rasterize
from rasterio.warp import transform_geom
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from ..errors import ParameterError
from .chips import open_dataset
from .semantic import IGNORE, DatasetError

PathLike = Union[str, Path]
ClassValue = Union[str, int, float]
BACKGROUND = "background"
MODES = ("sparse", "area")
POLYGON_TYPES = ("Polygon", "MultiPolygon")
COUNT_BLOCK = 2048  # pixels per side of the blocks the class check rasterises (4 MiB of uint8 each)
WHOLE_RASTER_LIMIT = 64_000_000  # pixels `rasterize_all` holds at once (64 MiB); larger rasters go by window


@dataclass(frozen=True)
class LabelSpec:
    """Where the labels are and how to read them: the contract a trainer (and later the CLI and the
    QGIS dialog) fills in.

    `classes` maps a field value to a class name; several values may share a name (merging them),
    and a value mapped to None leaves its features out. Values compare as text, so an integer field
    matches the keys 1 or "1" alike (a dialog edits text). None: every distinct value of the field,
    sorted, named by its text. A value in the layer that the table lacks is an error, not a silent
    drop (a typo would otherwise lose labels).
    """

    path: PathLike
    field: str
    layer: Optional[str] = None  # a layer inside a GeoPackage (or any multi-layer source)
    classes: Optional[Mapping[Any, Optional[str]]] = None
    mode: str = "sparse"  # "sparse" or "area"
    area_path: Optional[PathLike] = None  # mode "area": the labelled-area polygons (None: the whole raster)
    area_layer: Optional[str] = None
    ignore_index: int = IGNORE

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ParameterError(f"label mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.mode == "sparse" and self.area_path is not None:
            raise ParameterError(f"a labelled-area layer ({self.area_path}) applies to mode 'area' only; "
                                 f"in mode 'sparse' everything outside the label polygons is ignored")
        if not 0 <= self.ignore_index <= 255:
            raise ParameterError(f"ignore_index is a label value from 0 to 255 (labels are uint8), got "
                                 f"{self.ignore_index}")
        if not str(self.field).strip():
            raise ParameterError(f"name the class field of {self.path}")


@dataclass(frozen=True)
class RasterGrid:
    """The pixel grid labels are burnt onto: what a raster's file says about its geometry."""

    name: str
    crs: Optional[CRS]
    transform: Affine
    width: int
    height: int
    count: int = 1  # bands

    @property
    def footprint(self) -> BaseGeometry:
        """The raster's outline in its CRS (a parallelogram when the transform is rotated)."""
        corners = [self.transform * xy for xy in ((0, 0), (self.width, 0), (self.width, self.height), (0, self.height))]
        return shapely.Polygon(corners)


def raster_grid(path: "PathLike | RasterGrid") -> RasterGrid:
    """The grid of the raster at `path` (a grid is returned as it is: a resampled view's, say); DatasetError
    when it is missing or unreadable."""
    if isinstance(path, RasterGrid):
        return path
    with open_dataset(path) as src:
        return RasterGrid(str(path), src.crs, src.transform, src.width, src.height, src.count)


def format_extent(bounds: Iterable[float], crs: Optional[CRS]) -> str:
    """(xmin, ymin, xmax, ymax) to about a centimetre, for messages."""
    decimals = 7 if crs is None or crs.is_geographic else 2
    return "(" + ", ".join(f"{float(v):.{decimals}f}" for v in bounds) + ")"


def _crs_name(crs: Optional[CRS]) -> str:
    if crs is None:
        return "no CRS"
    try:
        return crs.to_string() if crs.to_epsg() else crs.to_wkt()[:80]
    except CRSError:
        return crs.to_wkt()[:80]


# --- reading a polygon layer ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolygonLayer:
    """Polygons read from one layer, already in the raster's CRS, with their field values (feature order)."""

    path: str
    layer: str
    geometries: tuple[BaseGeometry, ...]
    values: tuple[Any, ...]  # the class field's value per geometry (None without a field)
    features: tuple[int, ...]  # the feature's position in the layer, for messages
    crs: Optional[CRS]  # the layer's own CRS
    fields: tuple[str, ...]
    empty: int  # features without a geometry (skipped)
    repaired: int  # invalid polygons made valid (shapely.make_valid)


def layer_names(path: PathLike) -> list[str]:
    """The layers of a vector source; DatasetError when it is missing or OGR cannot read it."""
    if not Path(path).exists():
        raise DatasetError(f"label layer not found: {path}")
    try:
        return list(fiona.listlayers(path))
    except (FionaError, OSError) as exc:
        raise DatasetError(f"{path}: not a readable vector layer ({exc}); expected a GeoPackage, Shapefile, "
                           f"GeoJSON or another file OGR reads") from None


def _open_layer(path: PathLike, layer: Optional[str]) -> tuple[fiona.Collection, str]:
    names = layer_names(path)
    if not names:
        raise DatasetError(f"{path} holds no vector layer")
    if layer is None:
        if len(names) > 1:
            raise DatasetError(f"{path} holds {len(names)} layers ({', '.join(names)}); name the one with the labels")
        layer = names[0]
    elif layer not in names:
        raise DatasetError(f"{path} has no layer {layer!r}; it holds {', '.join(names)}")
    try:
        return fiona.open(path, layer=layer), layer
    except (FionaError, OSError) as exc:
        raise DatasetError(f"{path} (layer {layer}): not readable ({exc})") from None


def layer_fields(path: PathLike, layer: Optional[str] = None) -> dict[str, str]:
    """Field name -> OGR type ("str", "int32"...) of a layer, for a dialog's field list."""
    collection, _ = _open_layer(path, layer)
    with collection:
        return dict(collection.schema["properties"])


def _check_field(name: str, fields: Iterable[str], where: str) -> None:
    fields = list(fields)
    if name in fields:
        return
    near = [f for f in fields if f.lower() == name.lower()]
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    raise DatasetError(f"{where} has no field {name!r}{hint}; its fields are "
                       f"{', '.join(repr(f) for f in fields) or 'none'}")


def _to_raster_crs(geometries: list[dict], src: Optional[CRS], grid: RasterGrid, where: str,
                   features: list[int]) -> list[dict]:
    if src is None and grid.crs is None:
        return geometries  # both in the same unnamed coordinates (the raster's transform places them)
    if src is None or grid.crs is None:
        has, lacks = (where, grid.name) if src is not None else (grid.name, where)
        raise DatasetError(f"{has} has a CRS ({_crs_name(src or grid.crs)}) but {lacks} has none, so the "
                           f"labels cannot be placed on the raster; assign the missing CRS (the one the "
                           f"coordinates are in) and try again")
    if src == grid.crs:
        return geometries
    try:
        moved = transform_geom(src, grid.crs, geometries)
    except Exception:  # noqa: BLE001 - GDAL's CPLE errors have no public class; find the feature below
        moved = []
        for geometry, feature in zip(geometries, features):
            try:
                moved.append(transform_geom(src, grid.crs, geometry))
            except Exception as exc:  # noqa: BLE001
                raise DatasetError(f"{where}: feature {feature} cannot be reprojected from {_crs_name(src)} to "
                                   f"the raster's {_crs_name(grid.crs)} ({exc}); is the layer's CRS right?") from None
    return moved


def read_polygons(path: PathLike, layer: Optional[str], grid: RasterGrid, field_name: Optional[str] = None,
                  what: str = "label layer") -> PolygonLayer:
    """Every polygon feature of a layer, reprojected to the grid's CRS, with `field_name`'s values.

    Raises DatasetError for an unreadable source, a missing field (listing the fields), a layer that
    is not polygons, an impossible reprojection and a layer with no polygon.
    """
    collection, layer = _open_layer(path, layer)
    where = f"{what} {path}" + (f" (layer {layer})" if layer != Path(path).stem else "")
    raw: list[dict] = []
    values: list[Any] = []
    features: list[int] = []
    kinds: Counter = Counter()
    empty = 0
    with collection:
        declared = collection.schema.get("geometry") or "Unknown"
        fields = tuple(collection.schema["properties"])
        crs = CRS.from_wkt(collection.crs_wkt) if collection.crs_wkt else None
        bare = declared.replace("3D ", "")
        if bare not in POLYGON_TYPES + ("Unknown", "Any", "GeometryCollection", "None"):
            raise DatasetError(f"{where} holds {declared} geometries; labels must be polygons "
                               f"({' or '.join(POLYGON_TYPES)})")
        if field_name is not None:
            _check_field(field_name, fields, where)
        try:
            for index, feature in enumerate(collection):
                if feature.geometry is None:
                    empty += 1
                    continue
                kind = feature.geometry.type
                kinds[kind] += 1
                if kind not in POLYGON_TYPES:
                    continue
                raw.append(feature.geometry.__geo_interface__)
                values.append(feature.properties[field_name] if field_name is not None else None)
                features.append(index)
        except (FionaError, OSError) as exc:
            raise DatasetError(f"{where}: reading failed after {len(features) + empty} features ({exc})") from None
    others = {k: n for k, n in kinds.items() if k not in POLYGON_TYPES}
    if others:
        listed = ", ".join(f"{n} {k}" for k, n in sorted(others.items()))
        raise DatasetError(f"{where} holds non-polygon features ({listed}); labels must be polygons "
                           f"({' or '.join(POLYGON_TYPES)})")
    if not raw:
        raise DatasetError(f"{where} holds no polygon ({empty} features without geometry)")
    moved = _to_raster_crs(raw, crs, grid, where, features)
    geometries, repaired = [], 0
    for geojson, feature in zip(moved, features):
        geometry = shape(geojson)
        coords = shapely.get_coordinates(geometry)
        if not np.isfinite(coords).all():
            raise DatasetError(f"{where}: feature {feature} has no place in the raster's {_crs_name(grid.crs)} "
                               f"(its reprojected coordinates are not finite); is the layer's CRS right?")
        if not geometry.is_valid:
            geometry = _polygonal(shapely.make_valid(geometry))
            repaired += 1
        geometries.append(geometry)
    return PolygonLayer(str(path), layer, tuple(geometries), tuple(values), tuple(features), crs, fields, empty,
                        repaired)


def _polygonal(geometry: BaseGeometry) -> BaseGeometry:
    """The polygon parts of make_valid's output (it may add the lines of a collapsed bow-tie)."""
    parts = [g for g in shapely.get_parts(geometry) if g.geom_type in POLYGON_TYPES]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _check_overlap(geometries: tuple[BaseGeometry, ...], path: str, grid: RasterGrid, what: str) -> None:
    footprint = grid.footprint
    if not any(footprint.intersects(g) for g in geometries):
        extent = shapely.total_bounds(np.array(geometries, dtype=object))
        raise DatasetError(
            f"the {what} {path} does not overlap the raster {grid.name}: the {what} spans "
            f"{format_extent(extent, grid.crs)} and the raster {format_extent(footprint.bounds, grid.crs)}, "
            f"both in the raster's {_crs_name(grid.crs)}; is it the right raster, or the layer's CRS?")


# --- the class table -----------------------------------------------------------------------------------------


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _sort_key(value: Any) -> tuple:
    return (1, str(value)) if isinstance(value, str) else (0, value)


def field_values(path: PathLike, field_name: str, layer: Optional[str] = None) -> dict[Any, int]:
    """Distinct non-null values of a layer's class field -> feature count, sorted (numbers by value):
    the rows of the editable class table a dialog shows."""
    collection, layer = _open_layer(path, layer)
    with collection:
        _check_field(field_name, collection.schema["properties"], f"label layer {path}")
        counts = Counter(f.properties[field_name] for f in collection)
    counts.pop(None, None)
    return {v: counts[v] for v in sorted(counts, key=_sort_key)}


def default_class_table(values: Iterable[Any]) -> dict[Any, str]:
    """Each distinct non-null value named by its text, in sorted order (integers as their str)."""
    return {v: str(v) for v in sorted({v for v in values if v is not None}, key=_sort_key)}


def _class_names(table: Mapping[Any, Optional[str]], mode: str) -> tuple[tuple[str, ...], dict[str, int]]:
    """Class names in index order, and value text -> class index (-1: left out)."""
    names = [BACKGROUND] if mode == "area" else []
    lookup: dict[str, int] = {}
    for value, name in table.items():
        key = str(value)
        if key in lookup:
            raise ParameterError(f"the class table names the value {key!r} twice (values compare as text)")
        if name is None:
            lookup[key] = -1
            continue
        name = str(name).strip()
        if not name:
            raise ParameterError(f"the class table gives the value {key!r} an empty class name")
        if name not in names:
            names.append(name)
        lookup[key] = names.index(name)
    return tuple(names), lookup


# --- the prepared labels -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerLabels:
    """A label layer ready to burn onto one raster grid: the polygons in the raster's CRS, in burn
    order (largest first, so the smallest wins), each with its class index."""

    spec: LabelSpec
    grid: RasterGrid
    class_names: tuple[str, ...]  # index -> name
    class_values: tuple[tuple[Any, ...], ...]  # index -> the field values mapped to it
    shapes: tuple[tuple[BaseGeometry, int], ...]  # (polygon, class index) in burn order
    area: Optional[tuple[BaseGeometry, ...]]  # mode "area": labelled-area polygons; None: the whole raster
    features: tuple[int, ...]  # label features per class
    left_out: int  # features whose value is null or mapped to None, or without a geometry
    repaired: int  # invalid polygons made valid
    pixel_counts: Optional[tuple[int, ...]] = None  # labelled pixels per class over the raster (load_labels)
    _tree: Any = field(default=None, init=False, repr=False, compare=False)
    _area_tree: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tree", shapely.STRtree([g for g, _ in self.shapes]))
        object.__setattr__(self, "_area_tree", shapely.STRtree(list(self.area or ())))

    @property
    def ignore_index(self) -> int:
        return self.spec.ignore_index

    @property
    def background(self) -> Optional[int]:
        """The background's class index (mode "area"), None in mode "sparse"."""
        return 0 if self.spec.mode == "area" else None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def rasterize_window(self, window: Window) -> np.ndarray:
        """uint8 class indices for `window` of the raster's grid (ignore_index where nothing counts).

        Only the polygons whose bounding box meets the window are burnt, so the cost follows the
        window, not the layer or the raster.
        """
        height, width = int(window.height), int(window.width)
        transform = window_transform(window, self.grid.transform)
        fill = self.ignore_index if self.spec.mode == "sparse" or self.area is not None else 0
        west, south, east, north = window_bounds(window, self.grid.transform)
        query = box(min(west, east), min(south, north), max(west, east), max(south, north))
        burn = [(self.area[i], 0) for i in sorted(int(i) for i in self._area_tree.query(query))] if self.area else []
        burn += [self.shapes[i] for i in sorted(int(i) for i in self._tree.query(query))]
        if not burn or height == 0 or width == 0:
            return np.full((height, width), fill, dtype=np.uint8)
        return rasterize(burn, out_shape=(height, width), transform=transform, fill=fill, dtype="uint8",
                         all_touched=False)

    def rasterize_all(self, max_pixels: int = WHOLE_RASTER_LIMIT) -> np.ndarray:
        """The whole raster's labels at once, for rasters of at most `max_pixels` pixels."""
        pixels = self.grid.width * self.grid.height
        if pixels > max_pixels:
            raise ParameterError(f"{self.grid.name} has {pixels} pixels, more than the {max_pixels} rasterize_all "
                                 f"holds at once; rasterise it window by window (rasterize_window)")
        return self.rasterize_window(Window(0, 0, self.grid.width, self.grid.height))

    def count_pixels(self, block: int = COUNT_BLOCK) -> np.ndarray:
        """Labelled pixels per class over the whole raster, rasterised `block` x `block` at a time."""
        counts = np.zeros(256, dtype=np.int64)
        for row in range(0, self.grid.height, block):
            for col in range(0, self.grid.width, block):
                window = Window(col, row, min(block, self.grid.width - col), min(block, self.grid.height - row))
                counts += np.bincount(self.rasterize_window(window).ravel(), minlength=256)
        return counts[: self.num_classes]

    def describe(self) -> list[str]:
        """One line per class: index, name, values, features, pixels."""
        lines = []
        for index, name in enumerate(self.class_names):
            values = ", ".join(repr(v) for v in self.class_values[index]) or "(unlabelled pixels)"
            pixels = "" if self.pixel_counts is None else f", {self.pixel_counts[index]} px"
            lines.append(f"{index} {name}: values {values}, {_count(self.features[index], 'feature')}{pixels}")
        return lines


def load_labels(raster: "PathLike | RasterGrid", spec: LabelSpec, count_pixels: bool = True) -> LayerLabels:
    """Read and check `spec`'s layers against `raster`'s grid (or a given grid, e.g. the raster resampled to
    a training resolution); every problem raises here, before training.

    With `count_pixels` (the default) the labels are also rasterised once over the whole raster,
    block by block, and a class without a labelled pixel is an error (training could not learn it
    and its score would be undefined); the counts are kept for class weights.
    """
    grid = raster_grid(raster)
    layer = read_polygons(spec.path, spec.layer, grid, spec.field)
    where = f"{spec.path}" + (f" (layer {layer.layer})" if spec.layer else "")
    table = dict(spec.classes) if spec.classes is not None else default_class_table(layer.values)
    names, lookup = _class_names(table, spec.mode)
    if not len(names) - (spec.mode == "area"):
        raise ParameterError(f"the class table for field {spec.field!r} of {where} maps every value to None: "
                             f"no class is left to train")
    if len(names) > 255 or spec.ignore_index < len(names):
        raise ParameterError(f"ignore_index {spec.ignore_index} must lie above the class indices 0..{len(names) - 1} "
                             f"(and labels are uint8: at most 255 classes)")
    unknown = Counter(v for v in layer.values if v is not None and str(v) not in lookup)
    if unknown:
        listed = ", ".join(f"{v!r} ({_count(unknown[v], 'feature')})" for v in sorted(unknown, key=_sort_key))
        known = ", ".join(repr(k) for k in table)
        raise DatasetError(f"field {spec.field!r} of {where} has values the class table lacks: {listed}; the table "
                           f"has {known} (add them, or map them to None to leave their features out)")
    shapes, left_out = [], layer.empty
    per_class = [0] * len(names)
    for geometry, value in zip(layer.geometries, layer.values):
        index = -1 if value is None else lookup[str(value)]
        if index < 0 or geometry.is_empty:
            left_out += 1
            continue
        shapes.append((geometry, index))
        per_class[index] += 1
    if not shapes:
        raise DatasetError(f"no feature of {where} has a class: every value of field {spec.field!r} is null or "
                           f"mapped to None")
    _check_overlap(tuple(g for g, _ in shapes), layer.path, grid, "label layer")
    order = sorted(range(len(shapes)), key=lambda i: -shapes[i][0].area)  # stable: equal areas keep file order
    area = None
    if spec.mode == "area" and spec.area_path is not None:
        area_layer = read_polygons(spec.area_path, spec.area_layer, grid, None, "labelled-area layer")
        _check_overlap(area_layer.geometries, area_layer.path, grid, "labelled-area layer")
        area = area_layer.geometries
    values_by_class: list[list[Any]] = [[] for _ in names]
    for value, index in ((v, lookup[str(v)]) for v in table):
        if index >= 0:
            values_by_class[index].append(value)
    labels = LayerLabels(spec, grid, names, tuple(tuple(v) for v in values_by_class),
                         tuple(shapes[i] for i in order), area, tuple(per_class), left_out, layer.repaired)
    if not count_pixels:
        return labels
    counts = labels.count_pixels()
    missing = [i for i in range(len(names)) if counts[i] == 0 and i != labels.background]
    if missing:
        listed = "; ".join(f"class {names[i]!r} (value{'s' if len(values_by_class[i]) > 1 else ''} "
                           f"{', '.join(repr(v) for v in values_by_class[i])} of field {spec.field!r}, "
                           f"{_count(per_class[i], 'feature')})" for i in missing)
        raise DatasetError(f"{listed}: no labelled pixel in the raster {grid.name}; its polygons lie outside the "
                           f"raster or cover no pixel centre. Fix the polygons, or map the value to None in the "
                           f"class table to drop the class")
    return replace(labels, pixel_counts=tuple(int(c) for c in counts))
