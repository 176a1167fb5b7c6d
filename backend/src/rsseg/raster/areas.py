"""Areas in square metres on any CRS: projected (honouring feet and other units) or geographic
(ellipsoidal, on the CRS's own ellipsoid).

Geographic areas use the ellipsoid's equal-area cylindrical map (longitude, area from the equator
to the latitude): pixel edges are meridians and parallels, which are straight lines there, so a
pixel-drawn polygon's area is exact, vectorised, and finite up to the poles (latitudes beyond
+-90, as a half-pixel border of a global grid has, are clipped to the pole). Geodesic polygon areas
were NaN past the poles and zero for polygons spanning 360 degrees of longitude.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple, Optional

import numpy as np
import pyproj
import shapely


class _CrsInfo(NamedTuple):
    geod: Optional[pyproj.Geod]  # set for geographic CRSs
    factor: float  # metres per linear unit (projected) or radians per angular unit (geographic)


def _wkt(crs) -> str | None:
    return None if crs is None else crs if isinstance(crs, str) else crs.to_wkt()


@lru_cache(maxsize=16)
def _crs_info(wkt: str | None) -> _CrsInfo:
    """Cached: called per polygon."""
    if wkt is None:
        return _CrsInfo(None, 1.0)  # no CRS: assume metres
    crs = pyproj.CRS.from_user_input(wkt)  # from WKT, so it works without PROJ's database
    axes = crs.axis_info
    factor = axes[0].unit_conversion_factor if axes else (np.pi / 180 if crs.is_geographic else 1.0)
    return _CrsInfo(crs.get_geod() if crs.is_geographic else None, factor)


def _zone_area(lat_rad: np.ndarray, geod: pyproj.Geod) -> np.ndarray:
    """Area (m2) between the equator and each latitude, per radian of longitude, on the ellipsoid."""
    s = np.sin(np.clip(lat_rad, -np.pi / 2, np.pi / 2))
    e = float(np.sqrt(max(geod.es, 0.0)))
    if e < 1e-12:  # a sphere
        return geod.a**2 * s
    es = e * s
    return geod.b**2 / 2 * (s / (1 - es**2) + np.log((1 + es) / (1 - es)) / (2 * e))


def pixel_area_m2(crs, transform) -> float | None:
    """Area of one pixel in m2 for projected CRSs (honours feet etc.); None for geographic ones,
    whose pixel area varies with latitude."""
    info = _crs_info(_wkt(crs))
    if info.geod is not None:
        return None
    return abs(transform.a * transform.e - transform.b * transform.d) * info.factor**2


def geometry_areas_m2(geoms: np.ndarray, crs) -> np.ndarray:
    """Areas in m2 of an array of geometries: on the CRS's own ellipsoid for geographic CRSs (edges taken as
    meridians and parallels, as pixel edges are), planar area times the squared unit factor otherwise."""
    info = _crs_info(_wkt(crs))
    if info.geod is None:
        return shapely.area(geoms) * info.factor**2
    geod, k = info.geod, info.factor

    def to_equal_area(xy: np.ndarray) -> np.ndarray:
        return np.column_stack([xy[:, 0] * k, _zone_area(xy[:, 1] * k, geod)])

    return shapely.area(shapely.transform(geoms, to_equal_area))


def geometry_area_m2(geom, crs) -> float:
    """Area in m2 of one geometry (geometry_areas_m2)."""
    return float(geometry_areas_m2(np.array([geom], object), crs)[0])


def row_pixel_areas_m2(crs, transform, row0: int, rows: int) -> np.ndarray:
    """Area in m2 of one pixel in each of `rows` rows starting at `row0` (north-up grids).

    Constant on projected CRSs; on geographic ones it shrinks with latitude."""
    per_pixel = pixel_area_m2(crs, transform)
    if per_pixel is not None:
        return np.full(rows, per_pixel)
    info = _crs_info(_wkt(crs))
    edges = transform.f + transform.e * np.arange(row0, row0 + rows + 1, dtype=np.float64)
    zones = _zone_area(edges * info.factor, info.geod)
    return np.abs(np.diff(zones)) * abs(transform.a) * info.factor
