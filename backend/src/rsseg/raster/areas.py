"""Areas in square metres on any CRS: projected (honouring feet and other units) or geographic
(ellipsoidal, on the CRS's own ellipsoid)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyproj
from shapely.geometry import box
from shapely.geometry.polygon import orient


def _wkt(crs) -> str | None:
    return None if crs is None else crs if isinstance(crs, str) else crs.to_wkt()


@lru_cache(maxsize=16)
def _crs_info(wkt: str | None) -> tuple[pyproj.Geod | None, float]:
    """(Geod for geographic CRSs else None, metres per linear unit); cached: called per polygon."""
    if wkt is None:
        return None, 1.0  # no CRS: assume metres
    crs = pyproj.CRS.from_user_input(wkt)  # from WKT, so it works without PROJ's database
    if crs.is_geographic:
        return crs.get_geod(), 1.0
    axes = crs.axis_info
    return None, (axes[0].unit_conversion_factor if axes else 1.0)


def pixel_area_m2(crs, transform) -> float | None:
    """Area of one pixel in m2 for projected CRSs (honours feet etc.); None for geographic ones,
    whose pixel area varies with latitude."""
    geod, factor = _crs_info(_wkt(crs))
    if geod is not None:
        return None
    return abs(transform.a * transform.e - transform.b * transform.d) * factor**2


def geometry_area_m2(geom, crs) -> float:
    """Area in m2: ellipsoidal (the CRS's own ellipsoid) for geographic CRSs, planar area times the
    squared unit factor otherwise."""
    geod, factor = _crs_info(_wkt(crs))
    if geod is None:
        return geom.area * factor**2
    parts = getattr(geom, "geoms", [geom])
    return sum(abs(geod.geometry_area_perimeter(orient(p, 1.0))[0]) for p in parts)


def row_pixel_areas_m2(crs, transform, row0: int, rows: int) -> np.ndarray:
    """Area in m2 of one pixel in each of `rows` rows starting at `row0` (north-up grids).

    Constant on projected CRSs; on geographic ones it shrinks with the cosine of latitude, so
    each row is measured on the ellipsoid."""
    per_pixel = pixel_area_m2(crs, transform)
    if per_pixel is not None:
        return np.full(rows, per_pixel)
    areas = np.empty(rows)
    for i in range(rows):
        x0, y0 = transform * (0, row0 + i)
        x1, y1 = transform * (1, row0 + i + 1)
        areas[i] = geometry_area_m2(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), crs)
    return areas
