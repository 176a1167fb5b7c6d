"""What the entry points read off QGIS layers for a job."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProviderRegistry

from .job import JobError

LOCAL_ARCHIVES = ("/vsizip/", "/vsitar/", "/vsigzip/", "/vsi7z/", "/vsirar/")  # GDAL reads inside local files


def raster_file(layer) -> str:
    """The file behind a raster layer as GDAL opens it ('' for non-GDAL layers: web services, memory...):
    a path, or a local archive path such as /vsizip//data/scene.zip/band.tif."""
    if layer is None or layer.providerType() != "gdal":
        return ""
    parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    path = parts.get("path") or layer.source()
    prefix = parts.get("vsiPrefix") or ""
    return f"{prefix}{path}{parts.get('vsiSuffix') or ''}" if prefix else path


def local_raster(layer) -> str:
    """The local file behind a raster layer, or a JobError naming the layer (the backend reads files, and
    GDAL's local archives; not web services, network addresses or memory layers)."""
    path = raster_file(layer)
    archive = next((prefix for prefix in LOCAL_ARCHIVES if path.startswith(prefix)), None)
    container = QgsProviderRegistry.instance().decodeUri("gdal", layer.source()).get("path", "") if archive else path
    if not path or not container or not Path(container).is_file():
        raise JobError(f"the input raster “{layer.name()}” is not a local file ({layer.providerType()}: "
                       f"{layer.source()[:200]}); the backend reads local files: save or export it as a GeoTIFF "
                       "first (right-click the layer → Export → Save As…)")
    return path
