"""What the entry points read off QGIS layers for a job."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProviderRegistry

from .job import JobError


def raster_file(layer) -> str:
    """The local file behind a raster layer ('' for non-GDAL layers: web services, memory...)."""
    if layer is None:
        return ""
    if layer.providerType() != "gdal":
        return ""
    return QgsProviderRegistry.instance().decodeUri("gdal", layer.source()).get("path") or layer.source()


def local_raster(layer) -> str:
    """The local file behind a raster layer, or a JobError naming the layer (the backend reads files)."""
    path = raster_file(layer)
    if not path or not Path(path).is_file():
        raise JobError(f"the input raster “{layer.name()}” is not a local file ({layer.providerType()}: "
                       f"{layer.source()[:200]}); the backend reads files: save or export it as a GeoTIFF first")
    return path
