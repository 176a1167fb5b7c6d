"""Hand a job's files (mask.tif, polygons.gpkg) to Processing's destinations, and style them on load.

The backend writes GeoTIFF and GeoPackage into its out_dir; a destination of the same format gets
the file by move, any other format is converted with GDAL (gdal.Translate / gdal.VectorTranslate).
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from osgeo import gdal
from qgis.core import (
    QgsMapLayer,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterFileWriter,
    QgsVectorFileWriter,
)

from ..core.result_layers import style_raster, style_vector

RASTER_NATIVE = (".tif", ".tiff")
VECTOR_NATIVE = (".gpkg",)
POLYGON_LAYER = "polygons"  # the backend's layer name in polygons.gpkg


def _convert(what: str, convert, *args, **kwargs) -> None:
    """Run gdal.Translate / gdal.VectorTranslate; a failure is a QgsProcessingException naming `what`."""
    previous = gdal.GetUseExceptions()
    gdal.UseExceptions()
    try:
        dataset = convert(*args, **kwargs)
        if dataset is None:
            raise RuntimeError(gdal.GetLastErrorMsg() or "GDAL wrote nothing")
        dataset = None  # closing flushes the file
    except RuntimeError as exc:
        raise QgsProcessingException(f"cannot write {what}: {exc}") from None
    finally:
        if not previous:
            gdal.DontUseExceptions()


def deliver_raster(source: str, destination: str) -> str:
    """Move (GeoTIFF) or convert the mask to `destination`, a file path."""
    dest = Path(destination)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.suffix.lower() in RASTER_NATIVE:
        shutil.move(source, dest)
    else:
        driver = QgsRasterFileWriter.driverForExtension(dest.suffix) or "GTiff"
        _convert(f"the mask raster {dest}", gdal.Translate, str(dest), source, format=driver)
    return str(dest)


def deliver_vector(source: str, destination: str) -> str:
    """Move (GeoPackage) or convert the polygons to `destination` ("path" or "path|layername=x")."""
    path, _, options = destination.partition("|")
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.suffix.lower() in VECTOR_NATIVE and not options:
        dest.unlink(missing_ok=True)
        shutil.move(source, dest)
    else:
        driver = QgsVectorFileWriter.driverForExtension(dest.suffix) or "GPKG"
        layer = options.split("layername=", 1)[1].split("|")[0] if "layername=" in options else dest.stem
        _convert(f"the polygons {dest}", gdal.VectorTranslate, str(dest), source, format=driver,
                 layerName=layer, layers=[POLYGON_LAYER], accessMode="overwrite")
    return destination


class ResultStyler(QgsProcessingLayerPostProcessorInterface):
    """Applies the result's class palette to a loaded output (raster: paletted, vector: categorized)."""

    def __init__(self, classes: list[dict]):
        super().__init__()
        self.classes = classes

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 - QGIS API
        if layer is None or not layer.isValid():
            return
        if layer.type() == QgsMapLayer.RasterLayer:
            style_raster(layer, self.classes)
        elif layer.type() == QgsMapLayer.VectorLayer:
            style_vector(layer, self.classes)
        layer.triggerRepaint()


# Processing keeps only a pointer to a post-processor: the Python object must outlive the run.
_KEEP_MAX = 64
_kept: list[ResultStyler] = []
_kept_lock = threading.Lock()


def keep(styler: ResultStyler) -> ResultStyler:
    with _kept_lock:
        _kept.append(styler)
        del _kept[:-_KEEP_MAX]
    return styler


def style_on_load(context, destination: str, classes: list[dict]) -> None:
    if context.willLoadLayerOnCompletion(destination):
        context.layerToLoadOnCompletionDetails(destination).setPostProcessor(keep(ResultStyler(classes)))
