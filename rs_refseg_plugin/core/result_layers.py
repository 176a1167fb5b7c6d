"""Turn a backend result record (the worker's, or a result.json a user opens) into styled layers.

The raster gets a paletted renderer with the class names and colours, the polygons a categorized
renderer with the same colours; polygons of a model that finds separate objects (one feature per object,
with its score and rank: the instance_id field) are graduated by score instead, from pale (unsure) to the
class colour (sure), labelled "#rank score" when they are few (style_vector: the dock's and Processing's
one styling path). Both layers go in a group named "<prompt> — <model> <HH:MM:SS>" (the prompt shortened to
one line, so repeated runs are told apart and a long sentence stays a short name).
The full prompt, the model, the source raster and the job's summary go into each layer's metadata
(kept in the project). Layers are built and checked first and added only when all are valid, so a
failure adds nothing to the project.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional, Sequence

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsClassificationEqualInterval,
    QgsGradientColorRamp,
    QgsGraduatedSymbolRenderer,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsPalettedRasterRenderer,
    QgsPalLayerSettings,
    QgsProject,
    QgsRasterLayer,
    QgsRendererCategory,
    QgsRendererRange,
    QgsSymbol,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtGui import QColor

from ..protocol.contracts import POLYGON_LAYER, ClassSummary, SegmentResult
from .summary import MAX_LABEL, short, summary_lines

LEGEND_LABEL = 40  # characters of a class name in the legend (the full names are in the metadata)
KEYWORDS_MODEL = "rsseg model"  # QgsLayerMetadata keyword vocabularies
KEYWORDS_CLASSES = "rsseg classes"
SCORE_FIELD = "score"
SCORE_CLASSES = 5  # equal score ranges from 0 to 1: the same legend for every run
INSTANCE_COLOUR = "#d7301f"  # the strong end of the score ramp when the objects are of several classes
LABELLED_MAX = 25  # objects up to which a layer of objects is labelled "#rank score" (more: the labels are set up)
INSTANCE_LABEL = """'#' || "rank" || ' ' || format_number("score", 2)"""


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
    entries = [QgsPalettedRasterRenderer.Class(c.id, QColor(c.colour), short(c.name, LEGEND_LABEL)) for c in classes]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries))


def is_instance_layer(layer: QgsVectorLayer) -> bool:
    """Polygons of a model that finds separate objects: an instance_id field (in a shapefile, cut to
    "instance_i"), or a rank beside the score."""
    names = set(layer.fields().names())
    return bool({"instance_id", "instance_i"} & names) or {"rank", SCORE_FIELD} <= names


def style_vector(layer: QgsVectorLayer, classes: Sequence[ClassSummary]) -> None:
    """The polygons' style, for the dock and Processing alike: objects (is_instance_layer) graduated by score
    (style_instances), class regions categorized by class with the mask's colours."""
    if is_instance_layer(layer):
        style_instances(layer, classes)
        return
    categories = []
    for c in classes:
        symbol = QgsSymbol.defaultSymbol(layer.geometryType())
        symbol.setColor(QColor(c.colour))
        symbol.setOpacity(0.6)
        categories.append(QgsRendererCategory(c.id, symbol, short(c.name, LEGEND_LABEL)))
    layer.setRenderer(QgsCategorizedSymbolRenderer("class_id", categories))


def _pale(colour: QColor, amount: float = 0.8) -> QColor:
    """`colour` mixed with white (`amount` of white)."""
    return QColor(*(round(c + (255 - c) * amount) for c in (colour.red(), colour.green(), colour.blue())))


def score_ramp(classes: Sequence[ClassSummary]) -> QgsGradientColorRamp:
    """From pale (score 0) to the class's colour (score 1); with several classes, one red ramp for all."""
    strong = QColor(classes[0].colour if len(classes) == 1 else INSTANCE_COLOUR)
    if not strong.isValid():
        strong = QColor(INSTANCE_COLOUR)
    return QgsGradientColorRamp(_pale(strong), strong)


def style_instances(layer: QgsVectorLayer, classes: Sequence[ClassSummary]) -> None:
    """One feature per object: a graduated renderer on "score" (SCORE_CLASSES equal ranges of 0..1, labelled
    "score 0.80 – 1.00"), each object labelled "#rank score" while there are at most LABELLED_MAX (the labels
    are set up but off beyond that), and shown as "<class> #rank (score s)" where QGIS names a feature."""
    ramp = score_ramp(classes)
    ranges = []
    for i in range(SCORE_CLASSES):
        low, high = i / SCORE_CLASSES, (i + 1) / SCORE_CLASSES
        symbol = QgsSymbol.defaultSymbol(layer.geometryType())
        symbol.setColor(ramp.color(i / (SCORE_CLASSES - 1)))
        symbol.setOpacity(0.75)
        ranges.append(QgsRendererRange(low, high, symbol, f"score {low:.2f} – {high:.2f}"))
    renderer = QgsGraduatedSymbolRenderer(SCORE_FIELD, ranges)
    renderer.setSourceColorRamp(ramp.clone())
    renderer.setClassificationMethod(QgsClassificationEqualInterval())  # what "Classify" in the style panel redoes
    layer.setRenderer(renderer)
    label = QgsPalLayerSettings()
    label.fieldName = INSTANCE_LABEL
    label.isExpression = True
    layer.setLabeling(QgsVectorLayerSimpleLabeling(label))
    layer.setLabelsEnabled(0 <= layer.featureCount() <= LABELLED_MAX)
    layer.setDisplayExpression(""""class" || ' #' || "rank" || ' (score ' || format_number("score", 2) || ')'""")


# -- names and metadata ----------------------------------------------------------------------------

def _model(result: SegmentResult) -> str:
    model = result.request.get("model") if isinstance(result.request, dict) else None
    return model.strip() if isinstance(model, str) else ""


def _as_time(value) -> Optional[datetime]:
    """An epoch (seconds) or an ISO 8601 text as local time; None for anything else."""
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(value)
        if isinstance(value, str) and value.strip():
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            return parsed.astimezone() if parsed.tzinfo else parsed
    except (OverflowError, OSError, ValueError):
        pass
    return None


def finished_at(result: SegmentResult) -> Optional[datetime]:
    """When the job finished: the record's `finished` (of `run` or `timings`, where a backend writes
    one), else the mask file's modification time (written at the end of the job); None if neither."""
    for record in (result.run, result.timings):
        found = _as_time(record.get("finished")) if isinstance(record, dict) else None
        if found is not None:
            return found
    try:
        return datetime.fromtimestamp(os.stat(result.mask).st_mtime)
    except (OSError, TypeError, ValueError):
        return None


def _model_label(result: SegmentResult) -> str:
    """The model as a name shows it: a trained model (its id is its folder's path) by its folder's name."""
    model = _model(result)
    if "/" not in model and "\\" not in model:
        return model
    return re.split(r"[\\/]", model.rstrip("/\\"))[-1] or model


def _with_run(name: str, result: SegmentResult, when: Optional[datetime]) -> str:
    """"NAME — <model> <HH:MM:SS>", leaving out what the record does not say."""
    tail = " ".join(part for part in (short(_model_label(result), 40), when.strftime("%H:%M:%S") if when else "")
                    if part)
    return f"{name} — {tail}" if tail else name


def group_name(result: SegmentResult, when: Optional[datetime] = None) -> str:
    """"<short prompt> — <model> <HH:MM:SS>" (the time: finished_at unless given)."""
    when = when if when is not None else finished_at(result)
    return _with_run(short(result.prompt or "segmentation", MAX_LABEL), result, when)


def layer_name(result: SegmentResult, kind: str) -> str:
    """"<short prompt> (mask)" or "(polygons)": the group names the model and the time."""
    return f"{short(result.prompt or 'segmentation', MAX_LABEL)} ({kind})"


def describe(result: SegmentResult, when: Optional[datetime] = None) -> str:
    """The metadata abstract: the full prompt, the model, the source raster, when, and the summary."""
    request = result.request if isinstance(result.request, dict) else {}
    lines = [f"Prompt: {result.prompt}"]
    if _model(result):
        lines.append(f"Model: {_model(result)}")
    if request.get("checkpoint"):
        lines.append(f"Checkpoint: {request['checkpoint']}")
    if request.get("raster"):
        lines.append(f"Source raster: {request['raster']}")
    if when is not None:
        lines.append(f"Finished: {when.strftime('%Y-%m-%d %H:%M:%S')}")
    return "\n".join(lines + [""] + summary_lines(result))


def set_metadata(layer: QgsMapLayer, result: SegmentResult, kind: str, when: Optional[datetime] = None) -> None:
    """Title, abstract (describe) and keywords (the model, the class names) in the layer's metadata."""
    metadata = layer.metadata()  # keeps what the provider or a side-car file filled in
    metadata.setTitle(_with_run(layer_name(result, kind), result, when))
    metadata.setAbstract(describe(result, when))
    metadata.setType("dataset")
    keywords = {KEYWORDS_CLASSES: [c.name for c in result.classes]}
    if _model(result):
        keywords[KEYWORDS_MODEL] = [_model(result)]
    metadata.setKeywords(keywords)
    if layer.crs().isValid():
        metadata.setCrs(layer.crs())
    layer.setMetadata(metadata)


def add_result_layers(result: SegmentResult, project: QgsProject | None = None) -> AddedResult:
    """Load the outputs of one job as styled layers; raises ResultError and adds nothing on failure."""
    project = project or QgsProject.instance()
    raster = QgsRasterLayer(result.mask, layer_name(result, "mask"), "gdal")
    if not raster.isValid():
        raise ResultError(f"cannot load the mask raster {result.mask} (missing or not a GeoTIFF)")
    vector = None
    if result.polygons:
        vector = QgsVectorLayer(f"{result.polygons}|layername={POLYGON_LAYER}", layer_name(result, "polygons"), "ogr")
        if not vector.isValid():
            raise ResultError(f"cannot load the polygons {result.polygons} (missing or not a GeoPackage)")
        style_vector(vector, result.classes)
    style_raster(raster, result.classes)
    when = finished_at(result)
    for layer, kind in ((raster, "mask"), (vector, "polygons")):
        if layer is not None:
            set_metadata(layer, result, kind, when)
    group = project.layerTreeRoot().insertGroup(0, group_name(result, when))
    for layer in (vector, raster):
        if layer is not None:
            project.addMapLayer(layer, False)
            group.addLayer(layer)
    return AddedResult(group, raster, vector)
