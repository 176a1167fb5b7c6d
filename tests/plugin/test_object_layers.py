"""Models that find separate objects (zero-shot referring, SAM 3) in the plugin, without the dock: the model
list and first-run panel telling zero-shot models from those that need a trained checkpoint, top-k from
JobParameters to the request, the score styling of a layer of objects (the dock's and Processing's one path),
and Processing's TOP_K.

Real headless QGIS; GeoPackages written by the backend's own writers in the test's folder; Processing runs
through the real worker.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fiona
import pytest
from affine import Affine
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsExpression,
    QgsExpressionContext,
    QgsExpressionContextUtils,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingParameterDefinition,
    QgsProject,
    QgsSettings,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor
from rasterio.crs import CRS
from shapely.geometry import box, mapping

from rs_refseg_plugin.core.job import JobError, JobParameters
from rs_refseg_plugin.core.result_layers import INSTANCE_LABEL, is_instance_layer, style_vector
from rs_refseg_plugin.processing.model_choices import CACHE_KEY
from rs_refseg_plugin.processing.outputs import ResultStyler
from rs_refseg_plugin.protocol.contracts import MAX_TOP_K, POLYGON_LAYER, ClassSummary
from rs_refseg_plugin.ui.first_run import next_step
from rs_refseg_plugin.ui.model_picker import picker_items
from rsseg.raster.vectorize import SCHEMA, FoundObject, write_instances

DATA = Path(__file__).parents[1] / "data"
NEON = DATA / "neon_osbs_rgb.tif"
SENTENCE = "the building on the left"
CLASSES = [ClassSummary(1, SENTENCE, "#e31a1c")]
ROWS = [  # as the worker lists them (`models` rows), the referring ones
    {"id": "zs-ref-clip-b16-sam-b", "task": "sentence", "state": "download", "download_bytes": 928 * 2**20,
     "needs_checkpoint": False, "instances": True, "description": "Zero-shot referring segmentation, no training: "
     "SAM ViT-B mask proposals ranked by CLIP. More."},
    {"id": "zs-ref-clip-b16-litemedsam", "task": "sentence", "state": "import", "needs_checkpoint": False,
     "instances": True, "description": "Zero-shot, LiteMedSAM."},
    {"id": "rsrefseg-clip-b16-sam-b", "task": "sentence", "state": "download", "download_bytes": 928 * 2**20,
     "needs_checkpoint": True, "instances": False, "description": "RSRefSeg (CLIP ViT-B/16 + SAM ViT-B)."},
    {"id": "rsrefseg-siglip", "task": "sentence", "state": "needs checkpoint", "needs_checkpoint": True,
     "instances": False, "description": "RSRefSeg (SigLIP)."},
    {"id": "zs-ref-clip-b16-sam-b-tiny", "task": "sentence", "state": "ready", "test_model": True,
     "needs_checkpoint": False, "instances": True, "description": "Test-size twin."},
    {"id": "clip-vit-b-16", "task": "classes", "state": "ready", "instances": False, "description": "CLIP."},
]


# --- which referring models run now, and which need a checkpoint -----------------------------------------------

def test_the_sentence_list_tells_zero_shot_models_from_those_that_need_a_checkpoint():
    items = picker_items(ROWS, "sentence", show_test=False)
    assert [(i.label, i.model) for i in items] == [
        ("Need a download", None),
        ("zs-ref-clip-b16-sam-b — download (928 MB), zero-shot", "zs-ref-clip-b16-sam-b"),
        ("Need a weights file", None),
        ("zs-ref-clip-b16-litemedsam — weights file needed, zero-shot", "zs-ref-clip-b16-litemedsam"),
        ("Need a trained checkpoint", None),  # whatever its files' state: it also needs its weights
        ("rsrefseg-clip-b16-sam-b — needs a trained checkpoint; download (928 MB)", "rsrefseg-clip-b16-sam-b"),
        ("rsrefseg-siglip — needs a trained checkpoint", "rsrefseg-siglip")]
    tips = {i.model: i.tooltip for i in items if i.model}
    assert tips["zs-ref-clip-b16-sam-b"].splitlines() == [
        "Zero-shot referring segmentation, no training: SAM ViT-B mask proposals ranked by CLIP",
        "Zero-shot: runs without training or a checkpoint",
        "Finds separate objects, each its own polygon with its score: choose how many (top-k)"]
    assert "Choose checkpoint…" in tips["rsrefseg-clip-b16-sam-b"] and "Zero-shot" not in tips["rsrefseg-siglip"]
    classes = picker_items(ROWS, "classes", show_test=False)  # a class list: none of the referring words
    assert [(i.label, i.tooltip) for i in classes if i.model] == [("clip-vit-b-16 — ready", "CLIP")]


def test_the_first_run_panel_asks_for_the_weights_and_the_checkpoint_of_a_model_that_needs_both():
    python = "/venv/bin/python"
    step = next_step(python, ROWS, "rsrefseg-clip-b16-sam-b", "", False)
    assert step.actions == ["download", "import", "checkpoint"]
    assert "(download (928 MB))" in step.text and "also needs a trained checkpoint" in step.text
    assert next_step(python, ROWS, "rsrefseg-clip-b16-sam-b", "/runs/step-9.json", False).actions == \
        ["download", "import"]
    assert next_step(python, ROWS, "rsrefseg-siglip", "", False).actions == ["checkpoint"]
    assert next_step(python, ROWS, "zs-ref-clip-b16-sam-b", "", False).actions == ["download", "import"]
    assert next_step(python, ROWS, "zs-ref-clip-b16-sam-b-tiny", "", False) is None


# --- top-k from JobParameters to the request -------------------------------------------------------------------

def test_top_k_reaches_the_request_for_a_sentence_and_is_refused_for_a_class_list(tmp_path):
    def job(**kw):
        return JobParameters(**{"raster": str(NEON), "model": "zs-ref-clip-b16-sam-b", "mode": "sentence",
                                "prompt": SENTENCE, "out_dir": str(tmp_path), **kw})

    request = job(top_k=3).to_request()
    assert request.top_k == 3 and request.model_options == {"top_k": 3} and request.to_dict()["top_k"] == 3
    plain = job().to_request()  # not set: not sent, the model's default (one object)
    assert plain.top_k is None and "top_k" not in plain.model_options
    made = set(tmp_path.iterdir())
    assert len(made) == 2
    for fields, message in ((dict(mode="classes", prompt="tree, soil", top_k=2), "top-k applies to a referring "
                             "sentence, not to a class list"),
                            (dict(top_k=0), f"top-k must be between 1 and {MAX_TOP_K} objects, got 0"),
                            (dict(top_k=MAX_TOP_K + 1), f"between 1 and {MAX_TOP_K} objects, got {MAX_TOP_K + 1}")):
        with pytest.raises(JobError, match=message):
            job(**fields).to_request()
    assert set(tmp_path.iterdir()) == made  # a refused job makes no run folder


# --- a layer of objects is styled by score ---------------------------------------------------------------------

UTM = CRS.from_epsg(32617)
GRID = Affine(0.1, 0.0, 404000.0, 0.0, -0.1, 3286000.0)
OBJECTS = [FoundObject(1, 0.91, box(2, 2, 12, 10)), FoundObject(1, 0.35, box(30, 30, 40, 38)),
           FoundObject(1, 0.62, box(50, 4, 60, 14))]


def instance_layer(folder: Path, name: str = "objects") -> QgsVectorLayer:
    """A polygons.gpkg as a model that finds objects writes it (the backend's write_instances), loaded."""
    path = folder / f"{name}.gpkg"
    write_instances(path, OBJECTS, UTM, GRID, {1: SENTENCE}, SENTENCE)
    layer = QgsVectorLayer(f"{path}|layername={POLYGON_LAYER}", name, "ogr")
    assert layer.isValid()
    return layer


def expression_values(layer: QgsVectorLayer, text: str) -> list:
    context = QgsExpressionContext(QgsExpressionContextUtils.globalProjectLayerScopes(layer))
    expression = QgsExpression(text)
    values = []
    for feature in sorted(layer.getFeatures(), key=lambda f: f["rank"]):
        context.setFeature(feature)
        values.append(expression.evaluate(context))
    return values


def test_a_layer_of_objects_is_graduated_by_score_with_rank_and_score_labels(tmp_path, qgis_new_project):
    layer = instance_layer(tmp_path)
    assert is_instance_layer(layer) and {"instance_id", "rank", "score"} <= set(layer.fields().names())
    style_vector(layer, CLASSES)
    renderer = layer.renderer()
    assert renderer.type() == "graduatedSymbol" and renderer.classAttribute() == "score"
    ranges = renderer.ranges()
    assert [v for r in ranges for v in (r.lowerValue(), r.upperValue())] == pytest.approx(
        [0.0, 0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 0.8, 0.8, 1.0])
    assert [r.label() for r in ranges] == ["score 0.00 – 0.20", "score 0.20 – 0.40", "score 0.40 – 0.60",
                                           "score 0.60 – 0.80", "score 0.80 – 1.00"]
    colours = [r.symbol().color() for r in ranges]
    assert [c.lightness() for c in colours] == sorted((c.lightness() for c in colours), reverse=True)
    assert colours[0].lightness() > 200 and colours[-1].name() == QColor(CLASSES[0].colour).name()  # pale to strong
    assert renderer.sourceColorRamp() is not None  # "Classify" in the style panel keeps the ramp
    # each object in the range of its score
    assert {round(f["score"], 2): renderer.symbolForValue(f["score"]).color().name() for f in layer.getFeatures()} \
        == {0.91: colours[4].name(), 0.62: colours[3].name(), 0.35: colours[1].name()}
    # "#rank score" on the map (few objects: labels on), and as QGIS names a feature (identify, attribute form)
    assert layer.labelsEnabled() and layer.labeling().settings().isExpression
    assert layer.labeling().settings().fieldName == INSTANCE_LABEL
    assert expression_values(layer, INSTANCE_LABEL) == ["#1 0.91", "#2 0.62", "#3 0.35"]
    assert expression_values(layer, layer.displayExpression()) == [
        f"{SENTENCE} #1 (score 0.91)", f"{SENTENCE} #2 (score 0.62)", f"{SENTENCE} #3 (score 0.35)"]


def test_class_regions_keep_the_categorized_style_and_processing_styles_objects_the_same_way(tmp_path,
                                                                                            qgis_new_project):
    regions = tmp_path / "regions.gpkg"
    with fiona.open(regions, "w", driver="GPKG", layer=POLYGON_LAYER, schema=SCHEMA, crs_wkt=UTM.to_wkt()) as sink:
        sink.write({"geometry": mapping(box(404000, 3285990, 404005, 3285995)),
                    "properties": {"class": "tree", "class_id": 1, "prompt": "tree", "score": 0.7, "area_m2": 25.0}})
    layer = QgsVectorLayer(f"{regions}|layername={POLYGON_LAYER}", "regions", "ogr")
    assert layer.isValid() and not is_instance_layer(layer)
    style_vector(layer, [ClassSummary(1, "tree", "#33a02c")])
    assert layer.renderer().type() == "categorizedSymbol" and layer.renderer().classAttribute() == "class_id"
    assert not layer.labelsEnabled()
    # Processing's loaded output: the same styling (ResultStyler -> style_vector), also after a conversion to a
    # shapefile, whose field names are cut to 10 characters ("instance_i")
    objects = instance_layer(tmp_path)
    shapefile = tmp_path / "objects.shp"
    assert gdal.VectorTranslate(str(shapefile), str(tmp_path / "objects.gpkg"), format="ESRI Shapefile") is not None
    for loaded in (objects, QgsVectorLayer(str(shapefile), "shp", "ogr")):
        assert loaded.isValid()
        QgsProject.instance().addMapLayer(loaded)
        ResultStyler(CLASSES).postProcessLayer(loaded, QgsProcessingContext(), QgsProcessingFeedback())
        assert loaded.renderer().type() == "graduatedSymbol" and loaded.renderer().classAttribute() == "score"
        assert len(loaded.renderer().ranges()) == 5


def test_many_objects_get_their_labels_set_up_but_off(tmp_path, qgis_new_project):
    path = tmp_path / "many.gpkg"
    many = [FoundObject(1, (i + 1) / 40, box(3 * i, 0, 3 * i + 2, 2)) for i in range(40)]
    write_instances(path, many, UTM, GRID, {1: SENTENCE}, SENTENCE)
    layer = QgsVectorLayer(f"{path}|layername={POLYGON_LAYER}", "many", "ogr")
    style_vector(layer, CLASSES)
    assert layer.featureCount() == 40 and not layer.labelsEnabled()
    assert layer.labeling() is not None and layer.labeling().settings().fieldName == INSTANCE_LABEL


# --- Processing: TOP_K -------------------------------------------------------------------------------------------

@pytest.fixture
def stored_rows(qgis_app):
    """store(rows): the model list as the dock keeps it for Processing; put back as it was afterwards."""
    settings = QgsSettings()
    before = settings.value(CACHE_KEY, None)
    yield lambda rows: settings.setValue(CACHE_KEY, json.dumps(rows))
    if before is None:
        settings.remove(CACHE_KEY)
    else:
        settings.setValue(CACHE_KEY, before)


def run(parameters, context=None):
    from qgis import processing

    return processing.run("rsseg:segment_sentence", parameters, feedback=QgsProcessingFeedback(), context=context)


def test_the_sentence_algorithm_takes_an_optional_top_k(provider):
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("rsseg:segment_sentence")
    top_k = algorithm.parameterDefinition("TOP_K")
    assert top_k.flags() & QgsProcessingParameterDefinition.Flag.FlagOptional and top_k.defaultValue() is None
    assert (top_k.minimum(), top_k.maximum()) == (1, MAX_TOP_K)
    assert top_k.description().startswith("Objects to return (top-k")
    assert "Objects to return (TOP_K)" in algorithm.shortHelpString()


def test_top_k_with_a_model_that_returns_one_region_is_refused_before_the_job(provider, stored_rows, tmp_path):
    stored_rows([{"id": "rsrefseg-test", "task": "sentence", "instances": False, "test_model": True}])
    with pytest.raises(QgsProcessingException, match="^Objects to return: rsrefseg-test returns one region for a "
                                                     "sentence, not separate objects; leave it empty, or choose a "
                                                     "zero-shot model in the Model list$"):
        run({"INPUT": str(NEON), "SENTENCE": "the tall tree", "MODEL": "rsrefseg-test", "TOP_K": 2,
             "OUTPUT_RASTER": str(tmp_path / "mask.tif"), "OUTPUT_VECTOR": str(tmp_path / "objects.gpkg")})
    assert list(tmp_path.iterdir()) == []


def test_a_sentence_with_top_k_writes_at_most_k_objects_styled_by_score(provider, tmp_path, qgis_new_project):
    from processing.gui.Postprocessing import handleAlgorithmResults

    scene = shutil.copy(NEON, tmp_path / "scene.tif")
    project = QgsProject.instance()
    context = QgsProcessingContext()
    context.setProject(project)
    out_dir = tmp_path / "out"
    run({"INPUT": str(scene), "SENTENCE": "the tree on the left", "MODEL": "zs-ref-clip-b16-sam-b-tiny",
         "DEVICE": "cpu", "TOP_K": 2,
         "OUTPUT_RASTER": QgsProcessingOutputLayerDefinition(str(out_dir / "mask.tif"), project),
         "OUTPUT_VECTOR": QgsProcessingOutputLayerDefinition(str(out_dir / "objects.gpkg"), project)},
        context=context)
    assert sorted(p.name for p in out_dir.iterdir()) == ["mask.tif", "objects.gpkg"]  # nothing partial
    algorithm = QgsApplication.processingRegistry().algorithmById("rsseg:segment_sentence")
    assert handleAlgorithmResults(algorithm, context, QgsProcessingFeedback(), showResults=False)
    vector = next(layer for layer in project.mapLayers().values() if isinstance(layer, QgsVectorLayer))
    assert vector.featureCount() <= 2 and {"instance_id", "rank", "score"} <= set(vector.fields().names())
    assert sorted(f["rank"] for f in vector.getFeatures()) == list(range(1, vector.featureCount() + 1))
    assert vector.renderer().type() == "graduatedSymbol" and vector.renderer().classAttribute() == "score"
