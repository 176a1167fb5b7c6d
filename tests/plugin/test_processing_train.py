"""`rsseg:train_from_layers` in real headless QGIS: its parameters and help, the errors naming the parameter,
and a run through processing.run with the real worker whose MODEL_ID is then the Model of
`rsseg:segment_classes` (its classes filling an empty Classes); RFM-Seg's test twin trained on such a model
through HOST."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from osgeo import gdal
from processing_help import assert_help_names_every_parameter
from qgis.core import (
    QgsApplication,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFile,
    QgsSettings,
)
from train_layers import TINY, buildings_layer, labelled_gpkg, memory_labels, raster_layer

from rs_refseg_plugin.core.bundles import BUNDLE, NEW, UNFINISHED, run_folder_state
from rs_refseg_plugin.processing.model_choices import CACHE_KEY, SHOW_TEST_KEY, model_choices, trainable_choices
from rs_refseg_plugin.processing.train_algorithm import HELP_URL

ALGORITHM = "rsseg:train_from_layers"
PARAMETERS = ["RASTER", "LABELS", "FIELD", "CLASS_TABLE", "MODE", "AREA", "VALIDATION", "VALIDATION_LAYER", "MODEL",
              "HOST", "EPOCHS", "CHIP", "STRIDE", "LR", "BATCH_SIZE", "DEVICE", "NAME", "RESUME", "OUTPUT"]
FUSED = "rfm-seg-r18-rn50-tiny"  # RFM-Seg's test twin: builds on a trained UNetFormer (HOST)


class Log(QgsProcessingFeedback):
    def __init__(self, cancel_at_epoch: int = 0):
        super().__init__()
        self.lines: list[str] = []
        self.cancel_at_epoch = cancel_at_epoch

    def pushInfo(self, info):  # noqa: N802 - QGIS API
        self.lines.append(info)
        if self.cancel_at_epoch and info.startswith(f"epoch {self.cancel_at_epoch}/"):
            self.cancel()
        super().pushInfo(info)

    def setProgress(self, progress):  # noqa: N802 - QGIS API
        if self.cancel_at_epoch == -1 and progress > 5:  # in the first epoch
            self.cancel()
        super().setProgress(progress)


def run(parameters, feedback=None, algorithm=ALGORITHM):
    from qgis import processing

    return processing.run(algorithm, parameters, feedback=feedback or QgsProcessingFeedback())


@pytest.fixture
def models_cache():
    settings = QgsSettings()
    saved = {key: settings.value(key, None) for key in (CACHE_KEY, SHOW_TEST_KEY)}
    yield settings
    for key, value in saved.items():
        if value is None:
            settings.remove(key)
        else:
            settings.setValue(key, value)


def test_the_algorithm_its_parameters_and_help(provider, models_cache):
    registry = QgsApplication.processingRegistry()
    algorithm = registry.createAlgorithmById(ALGORITHM)
    assert [p.name() for p in algorithm.parameterDefinitions()] == PARAMETERS
    assert [o.name() for o in algorithm.outputDefinitions()] == ["OUTPUT", "MODEL_ID", "MIOU"]
    assert algorithm.helpUrl() == HELP_URL == \
        "https://github.com/rs-refseg/rs-refseg/blob/main/docs/plugin.md#train-on-your-own-layers"
    help_text = assert_help_names_every_parameter(algorithm)
    assert algorithm.parameterDefinition("FIELD").parentLayerParameterName() == "LABELS"
    for name in ("CLASS_TABLE", "AREA", "VALIDATION_LAYER", "STRIDE", "LR", "NAME", "HOST"):
        assert algorithm.parameterDefinition(name).flags() & QgsProcessingParameterDefinition.Flag.FlagOptional
    host = algorithm.parameterDefinition("HOST")
    assert host.behavior() == QgsProcessingParameterFile.Behavior.Folder
    assert not host.flags() & QgsProcessingParameterDefinition.Flag.FlagAdvanced  # RFM-Seg needs it
    assert "Host model (HOST): only for a model that builds on a model you trained before, rfm-seg-r18-rn50 (a " \
           "UNetFormer)" in help_text
    assert algorithm.parameterDefinition("MODEL").defaultValue() == "unetformer-r18"
    assert algorithm.group() == "Training" and algorithm.flags() & algorithm.FlagCanCancel


def test_the_model_list_offers_the_trainable_families(provider, models_cache):
    rows = [{"id": "clip-vit-b-16", "task": "classes"},
            {"id": "unetformer-r18", "task": "trainable", "runnable": False},
            {"id": "unetformer-r18-tiny", "task": "trainable", "runnable": False, "test_model": True},
            {"id": "sam-head-litemedsam", "task": "trainable", "runnable": False},
            {"id": "/data/models/roofs", "task": "classes", "bundle": True, "name": "roofs",
             "classes": ["background", "roof"]}]
    models_cache.remove(CACHE_KEY)
    assert trainable_choices() == ["unetformer-r18", "sam-head-litemedsam", "rfm-seg-r18-rn50",
                                   "rfm-seg-r18-vit-b-32", "sgseg-vit-b-16", "sgseg-convnext-l"]  # the protocol's
    models_cache.setValue(CACHE_KEY, json.dumps(rows))
    models_cache.setValue(SHOW_TEST_KEY, False)
    assert trainable_choices() == ["unetformer-r18", "sam-head-litemedsam"]
    assert model_choices("classes") == ["clip-vit-b-16", "/data/models/roofs"]  # bundles segment; families never
    models_cache.setValue(SHOW_TEST_KEY, True)
    assert trainable_choices() == ["unetformer-r18", "unetformer-r18-tiny", "sam-head-litemedsam"]
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM)
    assert algorithm.parameterDefinition("MODEL").options() == trainable_choices()


def test_bad_parameters_name_the_parameter(provider, tmp_path, qgis_new_project):
    raster, labels = raster_layer(tmp_path), labelled_gpkg(tmp_path)
    base = {"RASTER": raster, "LABELS": labels, "FIELD": "kind", "MODEL": TINY, "EPOCHS": 1, "CHIP": 64,
            "OUTPUT": str(tmp_path / "bundle")}
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "model.json").write_text("{}")
    cases = [
        ({"CLASS_TABLE": "house=building; castle=x"}, r"Class table \(CLASS_TABLE\): “castle” is not a value of the "
                                                      r"class field \(its values: garage, house, shed\)"),
        ({"CLASS_TABLE": "house building"}, r"Class table \(CLASS_TABLE\): “house building” is not value=name"),
        ({"CLASS_TABLE": "house=; garage=; shed="}, r"Class table \(CLASS_TABLE\): name at least one class"),
        ({"OUTPUT": str(taken)}, r"Model folder \(OUTPUT\): “.*taken” already holds a trained model"),
        ({"VALIDATION": 5}, r"Validation layer \(VALIDATION_LAYER\): choose the polygon layer"),
        ({"VALIDATION_LAYER": buildings_layer()}, r"set Validation \(VALIDATION\) to a validation layer"),
        ({"RESUME": True}, r"Resume \(RESUME\): “.*bundle” holds no unfinished training run"),
        ({"DEVICE": "tpu"}, r"DEVICE"),
        ({"HOST": str(taken)}, rf"Host model \(HOST\): {TINY} trains on its own and takes no host model: leave it "
                               "empty"),
        ({"MODEL": FUSED}, rf"Host model \(HOST\): {FUSED} fuses into a UNetFormer model you trained before: "
                           "choose that model"),
        ({"MODEL": FUSED, "HOST": str(tmp_path)}, r"Host model \(HOST\): “.*” is not a trained model folder \(it "
                                                  r"has no model.json\): choose the folder of a UNetFormer model"),
        ({"MODEL": FUSED, "HOST": str(tmp_path / "gone")}, r"Host model \(HOST\): “.*gone” does not exist"),
    ]
    for extra, message in cases:
        with pytest.raises(QgsProcessingException, match=message):
            run({**base, **extra})
    assert run_folder_state(tmp_path / "bundle") == NEW and not list(tmp_path.glob(".rsseg-train-*"))


def test_train_then_segment_classes_with_the_model(provider, worker, tmp_path, qgis_new_project, models_cache):
    """A memory layer of labels (written for the run), a class table merging and leaving out values; the
    epoch lines in the log; MODEL_ID as the Model of Segment classes with Classes left empty."""
    raster, labels = raster_layer(tmp_path), memory_labels()
    log = Log()
    result = run({"RASTER": raster, "LABELS": labels, "FIELD": "kind",
                  "CLASS_TABLE": "house=building; garage=building; shed=", "MODE": 0, "VALIDATION": 1,
                  "MODEL": TINY, "EPOCHS": 1, "CHIP": 64, "BATCH_SIZE": 4, "DEVICE": "cpu", "NAME": "roofs",
                  "OUTPUT": str(tmp_path / "out" / "roofs")}, log)
    bundle = tmp_path / "out" / "roofs"
    assert result["OUTPUT"] == str(bundle) and result["MODEL_ID"] == str(bundle.resolve())
    assert run_folder_state(bundle) == BUNDLE and not list((tmp_path / "out").glob(".rsseg-train-*"))
    assert 0.0 <= result["MIOU"] <= 1.0
    assert any(line.startswith("written to a temporary GeoPackage for the run: drawn labels") for line in log.lines)
    assert any(line.startswith("epoch 1/1: loss ") and "validation mIoU" in line for line in log.lines), log.lines
    assert any(line.startswith("“roofs”: validation mIoU") for line in log.lines)
    assert any(line.strip().startswith("building: IoU") for line in log.lines)
    assert result["MODEL_ID"] in model_choices("classes")  # offered by Segment classes before the dock refreshes
    segmented = run({"INPUT": raster, "CLASSES": "", "MODEL": result["MODEL_ID"], "DEVICE": "cpu",
                     "OUTPUT_RASTER": str(tmp_path / "mask.tif"), "OUTPUT_VECTOR": str(tmp_path / "polygons.gpkg")},
                    algorithm="rsseg:segment_classes")
    mask = gdal.Open(segmented["OUTPUT_RASTER"])
    assert (mask.RasterXSize, mask.RasterYSize) == (900, 900)
    table = mask.GetRasterBand(1).GetRasterColorTable()
    assert table is not None and table.GetCount() >= 2
    assert Path(segmented["OUTPUT_VECTOR"]).is_file()
    # the same model id through Custom model id, with its classes typed
    again = run({"INPUT": raster, "CLASSES": "background, building", "CUSTOM_MODEL": result["MODEL_ID"],
                 "DEVICE": "cpu", "OUTPUT_RASTER": "TEMPORARY_OUTPUT", "OUTPUT_VECTOR": "TEMPORARY_OUTPUT"},
                algorithm="rsseg:segment_classes")
    assert Path(again["OUTPUT_RASTER"]).is_file()


def test_rfm_seg_trains_on_a_unetformer_you_trained_given_as_host(provider, worker, tmp_path, qgis_new_project):
    """A UNetFormer trained first; its folder as HOST of RFM-Seg's test twin, which the worker fuses into it (the
    bundle records the host) and whose MODEL_ID segments like any trained model."""
    raster = raster_layer(tmp_path)
    common = {"RASTER": raster, "LABELS": labelled_gpkg(tmp_path), "FIELD": "kind",
              "CLASS_TABLE": "house=building; garage=building; shed=building", "VALIDATION": 1, "EPOCHS": 1,
              "CHIP": 64, "BATCH_SIZE": 4, "DEVICE": "cpu"}
    host = run({**common, "MODEL": TINY, "OUTPUT": str(tmp_path / "host")})
    log = Log()
    fused = run({**common, "MODEL": FUSED, "HOST": host["OUTPUT"], "OUTPUT": str(tmp_path / "fused")}, log)
    manifest = json.loads((tmp_path / "fused" / "model.json").read_text())
    assert manifest["builder"] == "rfm_seg" and manifest["classes"] == ["background", "building"]
    assert Path(manifest["training"]["host"]).resolve() == Path(host["MODEL_ID"])
    assert any(line.startswith("epoch 1/1: loss ") for line in log.lines), log.lines
    segmented = run({"INPUT": raster, "CLASSES": "", "MODEL": fused["MODEL_ID"], "DEVICE": "cpu",
                     "OUTPUT_RASTER": str(tmp_path / "mask.tif"), "OUTPUT_VECTOR": str(tmp_path / "polygons.gpkg")},
                    algorithm="rsseg:segment_classes")
    assert gdal.Open(segmented["OUTPUT_RASTER"]).RasterXSize == 900


def test_cancel_in_the_first_epoch_leaves_nothing(provider, worker, tmp_path, qgis_new_project):
    with pytest.raises(QgsProcessingException, match="cancelled"):
        run({"RASTER": raster_layer(tmp_path), "LABELS": labelled_gpkg(tmp_path), "FIELD": "kind", "MODEL": TINY,
             "EPOCHS": 3, "CHIP": 64, "BATCH_SIZE": 4, "VALIDATION": 4, "OUTPUT": str(tmp_path / "cancelled")},
            Log(cancel_at_epoch=-1))
    assert not (tmp_path / "cancelled").exists() and not list(tmp_path.glob(".rsseg-train-*"))
    assert run_folder_state(tmp_path / "cancelled") not in (UNFINISHED, BUNDLE)


def test_empty_classes_need_a_trained_model(provider, tmp_path, qgis_new_project):
    """Classes is optional for a trained model only: with another model an empty Classes is still refused."""
    with pytest.raises(QgsProcessingException, match="type at least one class"):
        run({"INPUT": raster_layer(tmp_path), "CLASSES": "", "MODEL": "clip-vit-b-16",
             "OUTPUT_RASTER": "TEMPORARY_OUTPUT", "OUTPUT_VECTOR": "TEMPORARY_OUTPUT"},
            algorithm="rsseg:segment_classes")
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("rsseg:segment_classes")
    assert algorithm.parameterDefinition("CLASSES").flags() & QgsProcessingParameterDefinition.Flag.FlagOptional
