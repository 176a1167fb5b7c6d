"""What the entry points read off QGIS layers for a job."""

from __future__ import annotations

from qgis.core import QgsProviderRegistry


def raster_file(layer) -> str:
    """The local file behind a raster layer ('' for non-GDAL layers: web services, memory...)."""
    if layer is None:
        return ""
    if layer.providerType() != "gdal":
        return ""
    return QgsProviderRegistry.instance().decodeUri("gdal", layer.source()).get("path") or layer.source()
