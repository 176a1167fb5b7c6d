"""Turn a backend result record (the worker's, or a result.json a user opens) into styled layers.

The raster gets a paletted renderer with the class names and colours, the polygons a categorized
renderer with the same colours, both in a group named after the prompt. Layers are built and
checked first and added only when all are valid, so a failure adds nothing to the project.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsLayerTreeGroup,
    QgsPalettedRasterRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsRendererCategory,
    QgsSymbol,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

from ..protocol.contracts import POLYGON_LAYER, ClassSummary, SegmentResult


class ResultError(Exception):
    """The result record or one of its files cannot be loaded (message names the file)."""


@dataclass
class AddedResult:
    group: QgsLayerTreeGroup
    raster: QgsRasterLayer
    vector: QgsVectorLayer | None


def read_result(path: str | Path) -> SegmentResult:
    """A result.json a user opens ("Load result…"); a job's own result comes with the worker's record."""
    path = Path(path)
    try:
        return SegmentResult.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ResultError(f"result record not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise ResultError(f"{path} is not a readable result record (expected rsseg's result.json): {exc}") from None


def style_raster(layer: QgsRasterLayer, classes: Sequence[ClassSummary]) -> None:
    entries = [QgsPalettedRasterRenderer.Class(c.id, QColor(c.colour), c.name) for c in classes]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries))


def style_vector(layer: QgsVectorLayer, classes: Sequence[ClassSummary]) -> None:
    categories = []
    for c in classes:
        symbol = QgsSymbol.defaultSymbol(layer.geometryType())
        symbol.setColor(QColor(c.colour))
        symbol.setOpacity(0.6)
        categories.append(QgsRendererCategory(c.id, symbol, c.name))
    layer.setRenderer(QgsCategorizedSymbolRenderer("class_id", categories))


def add_result_layers(result: SegmentResult, project: QgsProject | None = None) -> AddedResult:
    """Load the outputs of one job as styled layers; raises ResultError and adds nothing on failure."""
    project = project or QgsProject.instance()
    prompt = result.prompt or "segmentation"
    raster = QgsRasterLayer(result.mask, f"{prompt} (mask)", "gdal")
    if not raster.isValid():
        raise ResultError(f"cannot load the mask raster {result.mask} (missing or not a GeoTIFF)")
    vector = None
    if result.polygons:
        vector = QgsVectorLayer(f"{result.polygons}|layername={POLYGON_LAYER}", f"{prompt} (polygons)", "ogr")
        if not vector.isValid():
            raise ResultError(f"cannot load the polygons {result.polygons} (missing or not a GeoPackage)")
        style_vector(vector, result.classes)
    style_raster(raster, result.classes)
    group = project.layerTreeRoot().insertGroup(0, prompt)
    for layer in (vector, raster):
        if layer is not None:
            project.addMapLayer(layer, False)
            group.addLayer(layer)
    return AddedResult(group, raster, vector)
