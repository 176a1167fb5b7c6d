"""The `rsseg` Processing provider in real headless QGIS, through processing.run and a real worker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingUtils,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)

from rs_refseg_plugin import classFactory
from rs_refseg_plugin.processing.outputs import ResultStyler
from rs_refseg_plugin.protocol.contracts import DEFAULT_MODELS

DATA = Path(__file__).parents[1] / "data"
RASTER = str(DATA / "neon_osbs_rgb.tif")


def run(algorithm, parameters, feedback=None, context=None):
    from qgis import processing

    return processing.run(algorithm, parameters, feedback=feedback or QgsProcessingFeedback(),
                          context=context)


def test_plugin_registers_and_removes_the_provider(qgis_iface, qgis_processing):
    registry = QgsApplication.processingRegistry()
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    try:
        assert registry.providerById("rsseg") is plugin.provider
    finally:
        plugin.unload()
    assert registry.providerById("rsseg") is None


def test_provider_lists_its_algorithms_with_their_parameters(provider):
    assert sorted(a.id() for a in provider.algorithms()) == ["rsseg:segment_classes", "rsseg:segment_many",
                                                             "rsseg:segment_sentence", "rsseg:train_from_layers"]
    # train_from_layers: tests/plugin/test_processing_train.py; segment_many: tests/plugin/test_processing_batch.py
    names = {a.id(): [p.name() for p in a.parameterDefinitions()] for a in provider.algorithms()
             if a.id() not in ("rsseg:train_from_layers", "rsseg:segment_many")}
    assert names == {
        "rsseg:segment_classes": ["INPUT", "CLASSES", "MODEL", "CUSTOM_MODEL", "DEVICE", "BANDS", "RESOLUTION",
                                  "NODATA", "OUTPUT_RASTER", "OUTPUT_VECTOR"],
        "rsseg:segment_sentence": ["INPUT", "SENTENCE", "MODEL", "CUSTOM_MODEL", "DEVICE", "EXTENT", "CHECKPOINT",
                                   "TOP_K", "BANDS", "RESOLUTION", "NODATA", "OUTPUT_RASTER", "OUTPUT_VECTOR"],
    }
    registry = QgsApplication.processingRegistry()
    classes = registry.algorithmById("rsseg:segment_classes")
    assert classes.parameterDefinition("MODEL").defaultValue() == "clip-vit-b-16"
    assert registry.algorithmById("rsseg:segment_sentence").parameterDefinition("MODEL").defaultValue() \
        == DEFAULT_MODELS["sentence"] == "zs-ref-clip-b16-sam-b"  # runs with public weights, no training
    assert classes.parameterDefinition("DEVICE").options() == ["auto", "cpu", "cuda", "mps"]
    assert not classes.flags() & classes.FlagNoThreading and classes.flags() & classes.FlagCanCancel
    assert classes.shortHelpString() and classes.group() == "Segmentation"
    assert classes.createInstance() is not classes


def test_segment_classes_writes_georeferenced_mask_and_polygons(provider, tmp_path):
    progress = []
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(progress.append)
    out = run("rsseg:segment_classes", {
        "INPUT": RASTER, "CLASSES": "tree; grass, lawn; soil", "MODEL": "test", "DEVICE": "cpu",
        "OUTPUT_RASTER": str(tmp_path / "mask.tif"), "OUTPUT_VECTOR": str(tmp_path / "polygons.gpkg"),
    }, feedback)
    source = QgsRasterLayer(RASTER, "source", "gdal")
    mask = QgsRasterLayer(out["OUTPUT_RASTER"], "mask", "gdal")
    assert out["OUTPUT_RASTER"] == str(tmp_path / "mask.tif") and mask.isValid()
    assert mask.crs() == source.crs() and mask.crs().authid() == "EPSG:32617"
    assert mask.extent() == source.extent()
    polygons = QgsVectorLayer(out["OUTPUT_VECTOR"], "polygons", "ogr")
    assert polygons.isValid() and polygons.featureCount() > 0 and polygons.crs() == source.crs()
    assert {"class", "class_id"} <= set(polygons.fields().names())
    assert {f["class"] for f in polygons.getFeatures()} <= {"tree", "grass, lawn", "soil"}
    assert progress and max(progress) >= 90
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", "polygons.gpkg"]


def test_other_formats_are_converted_and_loaded_layers_are_styled(provider, tmp_path, qgis_new_project):
    """Destinations "to open after running" (what the dialog, batch and models pass) get the result's palette."""
    from processing.gui.Postprocessing import handleAlgorithmResults

    project = QgsProject.instance()
    context = QgsProcessingContext()
    context.setProject(project)
    out = run("rsseg:segment_classes", {
        "INPUT": RASTER, "CLASSES": "tree, soil", "MODEL": "test", "DEVICE": "cpu",
        "OUTPUT_RASTER": QgsProcessingOutputLayerDefinition(str(tmp_path / "mask.img"), project),
        "OUTPUT_VECTOR": QgsProcessingOutputLayerDefinition(str(tmp_path / "polygons.shp"), project),
    }, context=context)
    assert gdal.Open(str(tmp_path / "mask.img")).GetDriver().ShortName == "HFA"
    assert QgsVectorLayer(str(tmp_path / "polygons.shp"), "p", "ogr").featureCount() > 0
    details = context.layerToLoadOnCompletionDetails(str(tmp_path / "mask.img"))
    assert isinstance(details.postProcessor(), ResultStyler)
    alg = QgsApplication.processingRegistry().algorithmById("rsseg:segment_classes")
    assert handleAlgorithmResults(alg, context, QgsProcessingFeedback(), showResults=False)
    layers = list(project.mapLayers().values())
    raster = next(layer for layer in layers if isinstance(layer, QgsRasterLayer))
    vector = next(layer for layer in layers if isinstance(layer, QgsVectorLayer))
    assert raster.renderer().type() == "paletted"
    assert [c.label for c in raster.renderer().classes()] == ["tree", "soil"]
    assert vector.renderer().type() == "categorizedSymbol"
    assert vector.renderer().classAttribute() == "class_id"
    for layer, kind, file_name in ((raster, "mask", "mask"), (vector, "polygons", "polygons")):
        # named after the run, or after the file where QGIS prefers file names; the prompt in the metadata
        assert re.fullmatch(rf"tree, soil — test \d\d:\d\d:\d\d \({kind}\)|{file_name}", layer.name()), layer.name()
        assert "Prompt: tree, soil" in layer.metadata().abstract()
    assert out["OUTPUT_RASTER"] == str(tmp_path / "mask.img")


def test_segment_sentence_in_an_extent(provider, tmp_path):
    source = QgsRasterLayer(RASTER, "source", "gdal")
    full = source.extent()
    region = QgsRectangle(full.xMinimum(), full.yMinimum(), full.center().x(), full.center().y())
    extent = f"{region.xMinimum()},{region.xMaximum()},{region.yMinimum()},{region.yMaximum()} [EPSG:32617]"
    out = run("rsseg:segment_sentence", {
        "INPUT": RASTER, "SENTENCE": "the dark trees", "MODEL": "rsrefseg-test", "DEVICE": "cpu",
        "EXTENT": extent, "OUTPUT_RASTER": "TEMPORARY_OUTPUT", "OUTPUT_VECTOR": "TEMPORARY_OUTPUT",
    })
    assert all(Path(out[key]).is_file() for key in ("OUTPUT_RASTER", "OUTPUT_VECTOR")), out
    mask = QgsRasterLayer(out["OUTPUT_RASTER"], "mask", "gdal")
    assert mask.isValid() and mask.crs() == source.crs()
    got = mask.extent()
    pixel = source.rasterUnitsPerPixelX()
    assert full.contains(got)
    for edge in ("xMinimum", "yMinimum", "xMaximum", "yMaximum"):
        assert abs(getattr(got, edge)() - getattr(region, edge)()) <= pixel, (got.toString(), region.toString())
    polygons = QgsVectorLayer(out["OUTPUT_VECTOR"], "polygons", "ogr")
    assert polygons.isValid() and "class" in polygons.fields().names()


class CancelOnProgress(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.progressChanged.connect(lambda _: self.cancel())


def test_cancel_raises_and_leaves_no_outputs(provider, tmp_path):
    """Cancelled at the first progress event: the worker stops the job, nothing reaches the destinations."""
    work = Path(QgsProcessingUtils.tempFolder())
    before = set(work.glob("rsseg_*"))
    with pytest.raises(QgsProcessingException, match="^cancelled$"):
        run("rsseg:segment_classes", {
            "INPUT": RASTER, "CLASSES": "tree, soil", "MODEL": "clip-vit-b-16-tiny", "DEVICE": "cpu",
            "OUTPUT_RASTER": str(tmp_path / "mask.tif"), "OUTPUT_VECTOR": str(tmp_path / "polygons.gpkg"),
        }, CancelOnProgress())
    assert list(tmp_path.iterdir()) == []
    assert set(work.glob("rsseg_*")) == before  # the job's temporary folder is gone too


def test_bad_inputs_raise_clear_messages(provider, tmp_path):
    outputs = {"OUTPUT_RASTER": str(tmp_path / "m.tif"), "OUTPUT_VECTOR": str(tmp_path / "p.gpkg")}
    gdal.Translate("/vsimem/not_a_file.tif", RASTER)
    vsimem = QgsRasterLayer("/vsimem/not_a_file.tif", "in memory", "gdal")
    assert vsimem.isValid()
    project = QgsProject.instance()
    # the project owns (and deletes) it: a Python-owned layer left for interpreter exit would be
    # destroyed after QGIS has exited, and crash the process
    project.addMapLayer(vsimem, False)
    layer_id = vsimem.id()
    try:
        for params, expected in (
            ({"INPUT": RASTER, "CLASSES": " , ;"}, "type at least one class"),
            ({"INPUT": RASTER, "CLASSES": "water, WATER"}, "duplicate class names: 'water' and 'WATER'"),
            ({"INPUT": RASTER, "CLASSES": "tree", "MODEL": "no-such-model"}, "no-such-model.*Model list"),
            ({"INPUT": RASTER, "CLASSES": "tree", "MODEL": " "}, "Incorrect parameter value for MODEL"),
            ({"INPUT": vsimem, "CLASSES": "tree"}, "“in memory” is not a local file"),
            ({"INPUT": str(tmp_path / "missing.tif"), "CLASSES": "tree"}, "INPUT"),
        ):
            with pytest.raises(QgsProcessingException, match=expected) as caught:
                run("rsseg:segment_classes", {"MODEL": "test", "DEVICE": "cpu", **params, **outputs})
            assert "Traceback" not in str(caught.value) and "`" not in str(caught.value)
    finally:  # the layer (and its GDAL dataset) goes before its in-memory file does
        project.removeMapLayer(layer_id)
        gdal.Unlink("/vsimem/not_a_file.tif")
    with pytest.raises(QgsProcessingException, match="type a sentence"):
        run("rsseg:segment_sentence", {"INPUT": RASTER, "SENTENCE": "  ", "MODEL": "rsrefseg-test", **outputs})
    assert list(tmp_path.iterdir()) == []


def test_runs_as_a_model_builder_child(provider, tmp_path):
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )

    model = QgsProcessingModelAlgorithm("segment model", "tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("raster", "raster"),
                            QgsProcessingModelParameter("raster"))
    child = QgsProcessingModelChildAlgorithm("rsseg:segment_classes")
    child.setChildId("segment")
    child.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("raster")])
    for name, value in (("CLASSES", "tree, soil"), ("MODEL", "test"), ("DEVICE", "cpu")):
        child.addParameterSources(name, [QgsProcessingModelChildParameterSource.fromStaticValue(value)])
    output = QgsProcessingModelOutput("mask", "mask")
    output.setChildOutputName("OUTPUT_RASTER")
    child.setModelOutputs({"mask": output})
    model.addChildAlgorithm(child)
    model.updateDestinationParameters()  # what the designer does on every edit
    assert model.parameterDefinition("segment:mask") is not None
    out = run(model, {"raster": RASTER, "segment:mask": str(tmp_path / "mask.tif")})
    assert out["segment:mask"] == str(tmp_path / "mask.tif") and Path(out["segment:mask"]).is_file()


def test_batch_rows_run_as_background_tasks_one_after_the_other(provider, tmp_path):
    """What the batch dialog does: one QgsProcessingAlgRunnerTask per row, queued on the task
    manager at once; the rows share the one worker and each gets its own outputs."""
    import time

    from qgis.core import QgsApplication, QgsProcessingAlgRunnerTask, QgsProcessingContext

    algorithm = QgsApplication.processingRegistry().algorithmById("rsseg:segment_classes")
    rows = [{"INPUT": RASTER, "CLASSES": classes, "MODEL": "test", "DEVICE": "cpu",
             "OUTPUT_RASTER": str(tmp_path / f"{i}.tif"), "OUTPUT_VECTOR": str(tmp_path / f"{i}.gpkg")}
            for i, classes in enumerate(["tree, soil", "water, grass, shadow"])]
    results, keep = {}, []
    for i, row in enumerate(rows):
        context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
        task = QgsProcessingAlgRunnerTask(algorithm, row, context, feedback)
        task.executed.connect(lambda ok, out, i=i: results.__setitem__(i, (ok, out)))
        keep.append((task, context, feedback))
        QgsApplication.taskManager().addTask(task)
    deadline = time.monotonic() + 120
    while len(results) < len(rows) and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.05)
    assert all(results[i][0] for i in range(len(rows))), results
    for i, classes in enumerate(["tree, soil", "water, grass, shadow"]):
        mask = QgsRasterLayer(str(tmp_path / f"{i}.tif"), "mask", "gdal")
        assert mask.isValid() and mask.bandCount() == 1
        names = {f["class"] for f in QgsVectorLayer(str(tmp_path / f"{i}.gpkg"), "p", "ogr").getFeatures()}
        assert names <= set(classes.split(", ")) and names
