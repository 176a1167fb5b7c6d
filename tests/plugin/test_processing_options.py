"""The Processing algorithms' band, resolution, nodata and device parameters reach the backend; the
summary goes to the log; loaded outputs are named after the prompt, the model and the time.

Real headless QGIS through processing.run and a real worker with the `test` model (no weights).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from processing_help import assert_help_names_every_parameter
from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingParameterDefinition,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

from rs_refseg_plugin.core.summary import MAX_LABEL
from rs_refseg_plugin.processing.base import HELP_URL
from rs_refseg_plugin.protocol.contracts import NODATA

DATA = Path(__file__).parents[1] / "data"
RASTER = str(DATA / "neon_osbs_rgb.tif")
ALGORITHMS = ("rsseg:segment_classes", "rsseg:segment_sentence")


class Log(QgsProcessingFeedback):
    """A feedback that keeps what the algorithm writes to the Processing log."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def pushInfo(self, info):  # noqa: N802 - QGIS API
        self.lines.append(info)
        super().pushInfo(info)


def run(parameters, feedback=None, algorithm="rsseg:segment_classes", context=None):
    from qgis import processing

    defaults = {"INPUT": RASTER, "MODEL": "test", "DEVICE": "cpu", "OUTPUT_RASTER": "TEMPORARY_OUTPUT",
                "OUTPUT_VECTOR": "TEMPORARY_OUTPUT"}
    defaults["CLASSES" if algorithm.endswith("classes") else "SENTENCE"] = "tree, soil" \
        if algorithm.endswith("classes") else "the dark trees"
    return processing.run(algorithm, {**defaults, **parameters}, feedback=feedback or QgsProcessingFeedback(),
                          context=context)


def summary_of(lines: list[str]) -> str:
    """The log's "W × H px, N tiles on DEVICE ..., bands ..." line."""
    return next(line for line in lines if re.match(r"[\d,]+ × [\d,]+ px, ", line))


def test_parameters_help_and_links(provider):
    registry = QgsApplication.processingRegistry()
    assert HELP_URL == "https://github.com/rs-refseg/rs-refseg/blob/main/docs/plugin.md#processing"
    for algorithm_id in ALGORITHMS:
        algorithm = registry.createAlgorithmById(algorithm_id)
        assert algorithm.helpUrl() == HELP_URL
        assert_help_names_every_parameter(algorithm)
        bands = algorithm.parameterDefinition("BANDS")
        assert bands.allowMultiple() and bands.parentLayerParameterName() == "INPUT"
        for name in ("CUSTOM_MODEL", "BANDS", "RESOLUTION", "NODATA"):
            assert algorithm.parameterDefinition(name).flags() & QgsProcessingParameterDefinition.Flag.FlagOptional


def test_bands_reach_the_backend(provider):
    log = Log()
    run({"BANDS": [3, 2, 1]}, log)
    assert summary_of(log.lines).endswith("bands 3,2,1"), log.lines
    log = Log()
    run({"BANDS": [2]}, log)  # one band is repeated for the model's three inputs
    assert summary_of(log.lines).endswith("bands 2,2,2"), log.lines
    log = Log()
    run({}, log)
    assert summary_of(log.lines).endswith("bands 1,2,3"), log.lines
    for bands, words in (([1, 2], "the model takes 3 band(s) but 2 were given"), ([7], "band 7"),
                         ([0], "Bands: band numbers start at 1")):
        with pytest.raises(QgsProcessingException) as caught:
            run({"BANDS": bands})
        assert words in str(caught.value)


def test_resolution_sets_the_mask_grid(provider, tmp_path):
    out = run({"RESOLUTION": 0.2, "OUTPUT_RASTER": str(tmp_path / "mask.tif"),
               "OUTPUT_VECTOR": str(tmp_path / "polygons.gpkg")})
    mask = gdal.Open(out["OUTPUT_RASTER"])
    source = gdal.Open(RASTER)
    assert (mask.RasterXSize, mask.RasterYSize) == (200, 200)  # 400 × 400 px of 0.1 m
    assert mask.GetGeoTransform()[1] == pytest.approx(0.2) and mask.GetGeoTransform()[5] == pytest.approx(-0.2)
    assert mask.GetGeoTransform()[0] == pytest.approx(source.GetGeoTransform()[0])
    mask = None
    with pytest.raises(QgsProcessingException, match="Resolution: .* above 0"):
        run({"RESOLUTION": 0})


def collared(path: Path, width: int = 20) -> int:
    """neon_osbs_rgb.tif with a black border `width` pixels wide and no nodata flag (a scan's collar);
    returns the border's pixel count. The image itself has no pixel that is 0 in all bands."""
    gdal.Translate(str(path), RASTER, noData="none")
    dataset = gdal.Open(str(path), gdal.GA_Update)
    border = np.zeros((dataset.RasterYSize, dataset.RasterXSize), dtype=bool)
    border[:width], border[-width:], border[:, :width], border[:, -width:] = True, True, True, True
    for index in range(1, dataset.RasterCount + 1):
        band = dataset.GetRasterBand(index)
        assert band.GetNoDataValue() is None
        values = band.ReadAsArray()
        values[border] = 0
        band.WriteArray(values)
    dataset = None
    return int(border.sum())


def test_nodata_value_leaves_a_collar_out(provider, tmp_path):
    raster = tmp_path / "collar.tif"
    border = collared(raster)
    log = Log()
    out = run({"INPUT": str(raster), "NODATA": 0, "OUTPUT_RASTER": str(tmp_path / "mask.tif"),
               "OUTPUT_VECTOR": str(tmp_path / "polygons.gpkg")}, log)
    mask = gdal.Open(out["OUTPUT_RASTER"]).ReadAsArray()
    assert int((mask == NODATA).sum()) == border
    assert (mask[:20] == NODATA).all() and (mask[20:-20, 20:-20] != NODATA).all()
    assert f"{border:,} nodata pixels left out" in log.lines, log.lines
    log = Log()  # without NODATA the border is segmented like any dark pixel
    out = run({"INPUT": str(raster), "OUTPUT_RASTER": str(tmp_path / "m2.tif"),
               "OUTPUT_VECTOR": str(tmp_path / "p2.gpkg")}, log)
    assert int((gdal.Open(out["OUTPUT_RASTER"]).ReadAsArray() == NODATA).sum()) == 0
    assert not [line for line in log.lines if "nodata pixels" in line]


def test_device_takes_a_name_or_the_list_s_position(provider):
    for device, shown in ((1, "on cpu"), ("cpu", "on cpu"), ("CPU", "on cpu")):
        log = Log()
        run({"DEVICE": device}, log)
        assert shown in summary_of(log.lines), (device, log.lines)
    for device in ("gpu", 9, -1):
        with pytest.raises(QgsProcessingException, match="DEVICE"):
            run({"DEVICE": device})


def test_the_summary_goes_to_the_log(provider):
    log = Log()
    run({"CLASSES": "tree; grass, lawn; soil"}, log)
    class_lines = [line for line in log.lines if re.match(r"(tree|grass, lawn|soil): [\d,]+ px, .* polygons$", line)]
    assert len(class_lines) == 3, log.lines
    assert "tiles on cpu in" in summary_of(log.lines)
    log = Log()
    run({"RESOLUTION": 0.2}, log)
    assert any("0.2 m per pixel" in line for line in log.lines), log.lines  # the backend's notes too


def test_loaded_outputs_are_named_after_the_prompt_model_and_time(provider, qgis_new_project):
    from processing.gui.Postprocessing import handleAlgorithmResults

    project = QgsProject.instance()
    prompt = ("the dark trees along the edge of the clearing, south of the sandy track that crosses the "
              "whole image from west to east")
    assert len(prompt) > MAX_LABEL
    context = QgsProcessingContext()
    context.setProject(project)
    run({"SENTENCE": prompt, "MODEL": "rsrefseg-test",
         "OUTPUT_RASTER": QgsProcessingOutputLayerDefinition("TEMPORARY_OUTPUT", project),
         "OUTPUT_VECTOR": QgsProcessingOutputLayerDefinition("TEMPORARY_OUTPUT", project)},
        algorithm="rsseg:segment_sentence", context=context)
    algorithm = QgsApplication.processingRegistry().algorithmById("rsseg:segment_sentence")
    assert handleAlgorithmResults(algorithm, context, QgsProcessingFeedback(), showResults=False)
    layers = {type(layer): layer for layer in project.mapLayers().values()}
    raster, vector = layers[QgsRasterLayer], layers[QgsVectorLayer]
    short = prompt[:MAX_LABEL - 1].rstrip() + "…"
    assert re.fullmatch(re.escape(short) + r" — rsrefseg-test \d\d:\d\d:\d\d \(mask\)", raster.name()), raster.name()
    assert vector.name() == raster.name().replace("(mask)", "(polygons)")
    for layer in (raster, vector):
        assert prompt in layer.metadata().abstract() and "rsrefseg-test" in layer.metadata().abstract()
    assert raster.renderer().type() == "paletted" and vector.renderer().type() == "categorizedSymbol"


def test_backend_errors_name_the_dialog_s_fields_and_the_dock_s_buttons(provider):
    """An error record's fixes, worded for the dialog (or as the dock's buttons), never as a command;
    an older backend's "`rsseg ...`" advice is left out."""
    from rs_refseg_plugin.protocol.client import JobFailed, WorkerStartError
    from rs_refseg_plugin.protocol.messages import ErrorRecord

    registry = QgsApplication.processingRegistry()
    classes = registry.createAlgorithmById("rsseg:segment_classes")
    sentence = registry.createAlgorithmById("rsseg:segment_sentence")

    def failed(message, fixes=(), subject=""):
        return JobFailed(ErrorRecord("1", "ModelError", message, fixes=list(fixes), subject=subject))

    assert classes.error_text(failed("unknown model 'x' (see `rsseg models`)", ["models"])) == (
        "unknown model 'x': choose another model in the Model list, or type an id the backend knows in "
        "Custom model id")
    assert classes.error_text(failed("the weights of clip-vit-b-16 are missing", ["download", "import"],
                                     "clip-vit-b-16")) == (
        "the weights of clip-vit-b-16 are missing: press Download in the RS RefSeg dock to fetch the weights of "
        "clip-vit-b-16 (or press Import weights… in the RS RefSeg dock and choose the weight file of "
        "clip-vit-b-16)")
    assert sentence.error_text(failed("rsrefseg-x needs a trained checkpoint", ["checkpoint"], "rsrefseg-x")) == (
        "rsrefseg-x needs a trained checkpoint: choose the step-N.json of a training run in Trained checkpoint")
    assert classes.error_text(failed("weights missing; run `rsseg models download m`", ["from-a-newer-backend"])) \
        == "weights missing"
    assert classes.error_text(failed("x.tif has 2 bands but the model takes 3: choose the bands with --bands (e.g. 1 "
                                     "to replicate one band)")) == ("x.tif has 2 bands but the model takes 3: choose "
                                                                    "the bands in the Bands field (e.g. 1 to "
                                                                    "replicate one band)")
    start = WorkerStartError("the backend at '/venv/bin/python' did not start: no module\nTraceback tail",
                             ("setup",))
    assert classes.error_text(start) == ("the backend at '/venv/bin/python' did not start: no module: press Set up "
                                         "backend… in the RS RefSeg dock\nTraceback tail")


def test_a_band_error_of_the_backend_names_the_bands_field(provider, tmp_path):
    two_bands = tmp_path / "two_bands.tif"
    gdal.Translate(str(two_bands), RASTER, bandList=[1, 2])
    with pytest.raises(QgsProcessingException) as caught:
        run({"INPUT": str(two_bands)})
    message = str(caught.value)
    assert "2 band" in message and "Bands field" in message and "--" not in message and "`" not in message, message
    run({"INPUT": str(two_bands), "BANDS": [2]})  # what it says to do works

