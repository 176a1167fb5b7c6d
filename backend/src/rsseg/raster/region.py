"""Turn a RegionSpec (whole raster, bbox in any CRS, polygons) into a pixel window and a mask."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.features import geometry_mask
from rasterio.warp import transform_bounds, transform_geom
from rasterio.windows import Window, from_bounds
from rasterio.windows import transform as window_transform
from shapely.geometry import shape

from ..errors import RegionError, request_rules
from ..protocol.contracts import RegionSpec, check_bbox


@dataclass(frozen=True)
class Region:
    """A pixel window of the raster plus, for polygon regions, the geometries in the raster CRS."""

    window: Window
    geometries: Optional[list[dict]] = None

    @property
    def width(self) -> int:
        return int(self.window.width)

    @property
    def height(self) -> int:
        return int(self.window.height)

    def mask(self, window: Window, transform) -> Optional[np.ndarray]:
        """Inside-region mask for a window in raster pixel coordinates (None: everything inside)."""
        if not self.geometries:
            return None
        shape_ = (int(window.height), int(window.width))
        return geometry_mask(self.geometries, shape_, window_transform(window, transform), invert=True)

    def read(self, source, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """`source.read(window)` with pixels outside the region's polygons marked invalid."""
        data, valid = source.read(window)
        inside = self.mask(window, source.transform)
        if inside is not None:
            valid &= inside
        return data, valid


def coordinate_decimals(crs: Optional[CRS]) -> int:
    """Decimals that show a coordinate of `crs` to about a centimetre: 6 for degrees (0.1 m), 2 for metres and
    feet, more for larger units (kilometres: 5). Why: error messages quoted QGIS's extents with 14 digits."""
    if crs is None or crs.is_geographic:
        return 6
    try:
        metres = crs.linear_units_factor[1]
    except CRSError:  # an engineering or unusual CRS: no known unit
        return 6
    return min(6, max(0, math.ceil(math.log10(metres * 100) - 1e-9)))


def format_coords(values, crs: Optional[CRS]) -> str:
    """"(x0, y0, x1, y1)" rounded to what `crs` warrants (coordinate_decimals), for messages."""
    decimals = coordinate_decimals(crs)
    return "(" + ", ".join(repr(round(float(v), decimals) + 0.0) for v in values) + ")"


def _crs(value: Optional[str], default: CRS, what: str) -> CRS:
    if not value:
        return default
    try:
        return CRS.from_user_input(value)
    except CRSError as exc:
        raise RegionError(f"{what} CRS {value!r} is not a CRS GDAL knows (expected e.g. EPSG:4326)") from exc


def _window_for_bounds(bounds, dataset, described: str) -> Window:
    left, bottom, right, top = bounds
    if not all(math.isfinite(v) for v in bounds) or right <= left or top <= bottom:
        raise RegionError(f"{described} is empty or invalid (expected minx < maxx and miny < maxy)")
    win = from_bounds(left, bottom, right, top, transform=dataset.transform)
    col0 = max(0, math.floor(win.col_off + 1e-9))
    row0 = max(0, math.floor(win.row_off + 1e-9))
    col1 = min(dataset.width, math.ceil(win.col_off + win.width - 1e-9))
    row1 = min(dataset.height, math.ceil(win.row_off + win.height - 1e-9))
    if col1 <= col0 or row1 <= row0:
        raise RegionError(
            f"{described} lies outside {dataset.name} (raster bounds {format_coords(dataset.bounds, dataset.crs)} "
            f"in {dataset.crs})"
        )
    return Window(col0, row0, col1 - col0, row1 - row0)


def resolve_region(spec: RegionSpec, dataset) -> Region:
    """Resolve against an open dataset; raises RegionError for empty or outside regions."""
    if spec.is_whole:
        return Region(Window(0, 0, dataset.width, dataset.height))
    if dataset.crs is None:
        raise RegionError(f"{dataset.name} has no CRS, so a bbox or polygon region cannot be placed on it")
    if spec.polygons:
        src = _crs(spec.polygons_crs, dataset.crs, "polygon")
        geoms = []
        for geom in spec.polygons:
            try:
                g = transform_geom(src, dataset.crs, geom) if src != dataset.crs else geom
                if shape(g).is_empty:
                    continue
            except Exception as exc:  # noqa: BLE001 - any malformed geometry is a region error
                raise RegionError(f"region polygon is not a valid GeoJSON geometry: {exc}") from exc
            geoms.append(g)
        if not geoms:
            raise RegionError("region polygons are empty")
        bounds = np.array([shape(g).bounds for g in geoms])
        box = (bounds[:, 0].min(), bounds[:, 1].min(), bounds[:, 2].max(), bounds[:, 3].max())
        window = _window_for_bounds(box, dataset, f"region polygons (bounds {format_coords(box, dataset.crs)})")
        region = Region(window, geoms)
        if not region.mask(window, dataset.transform).any():
            raise RegionError(f"region polygons cover no pixel centre of {dataset.name}")
        return region
    src = _crs(spec.bbox_crs, dataset.crs, "bbox")
    with request_rules():
        check_bbox(spec.bbox)
    bbox = tuple(float(v) for v in spec.bbox)
    described = f"bbox {format_coords(bbox, src)} in {src.to_string()}"
    box = transform_bounds(src, dataset.crs, *bbox, densify_pts=21) if src != dataset.crs else bbox
    if not all(math.isfinite(v) for v in box):
        raise RegionError(
            f"{described} cannot be placed in {dataset.crs} (outside the valid area of {src.to_string()})")
    return Region(_window_for_bounds(box, dataset, described))
