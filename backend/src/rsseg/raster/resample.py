"""Processing resolution: read the raster on a coarser or finer grid than it is stored on.

CLIP-family models see objects at the scale they were trained on (roughly 0.3-1 m per pixel for
aerial imagery), so the user may ask for a processing resolution in metres per pixel. The source is
then read through a GDAL warped VRT on the same CRS with a scaled transform; the engine, the
region, the stretch and the outputs all work on that grid (outputs carry its transform).
"""

from __future__ import annotations

import math
from typing import Optional

import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from ..errors import ParameterError
from .areas import _crs_info, _wkt


def native_resolution_m(dataset: rasterio.DatasetReader) -> tuple[float, float]:
    """(x, y) pixel size in metres at the raster's centre (geodesic for geographic CRSs)."""
    t = dataset.transform
    geod, factor = _crs_info(_wkt(dataset.crs))  # factor: metres per unit when projected
    if geod is None:
        return math.hypot(t.a, t.d) * factor, math.hypot(t.b, t.e) * factor
    x, y = t * (dataset.width / 2, dataset.height / 2)
    xr, yr = t * (dataset.width / 2 + 1, dataset.height / 2)
    xd, yd = t * (dataset.width / 2, dataset.height / 2 + 1)
    return abs(geod.inv(x, y, xr, yr)[2]), abs(geod.inv(x, y, xd, yd)[2])


def resampled_view(dataset: rasterio.DatasetReader, resolution_m: float,
                   nodata: Optional[float] = None) -> WarpedVRT:
    """The dataset on a grid of `resolution_m` metres per pixel (same CRS and extent); a positive number,
    checked by SegmentRequest.validate(). `nodata` (the request's override of the file's nodata) is what
    the warper leaves out of its averages and writes where no valid pixel was."""
    if dataset.crs is None:
        raise ParameterError(f"{dataset.name} has no CRS, so a processing resolution in metres cannot be applied")
    res_x, res_y = native_resolution_m(dataset)
    width = max(1, round(dataset.width * res_x / resolution_m))
    height = max(1, round(dataset.height * res_y / resolution_m))
    transform = dataset.transform * Affine.scale(dataset.width / width, dataset.height / height)
    coarser = width < dataset.width or height < dataset.height
    # float32 output keeps interpolated values exact; the warper carries nodata (all-bands rule still applies)
    override = {} if nodata is None else {"src_nodata": nodata, "nodata": nodata}
    return WarpedVRT(dataset, crs=dataset.crs, transform=transform, width=width, height=height, dtype="float32",
                     resampling=Resampling.average if coarser else Resampling.bilinear, **override)
