"""The dock's Train tab in real headless QGIS: the request it builds from real layers (class field, class
table edits, memory layers written to a temporary GeoPackage, validation choices, errors naming the field),
"My models" in the Segment tab's model list, the Host model row of a family that builds on a model you
trained (RFM-Seg), and training through the real worker with the tiny test family, then segmenting with the
new model."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsProject, QgsSettings, QgsVectorLayer
from train_layers import (
    KINDS,
    TINY,
    buildings_layer,
    labelled_gpkg,
    memory_labels,
    pump,
    raster_layer,
)

from rs_refseg_plugin.core.bundles import BUNDLE, NEW, UNFINISHED, bundle_classes, run_folder_state
from rs_refseg_plugin.core.train_job import VALIDATION_CHOICES, TrainError, TrainParameters, train_percent
from rs_refseg_plugin.ui.model_picker import picker_items
from rs_refseg_plugin.ui.train_panel import TRAIN_HOST_KEY, TrainPanel

ROWS = [  # the worker's `models` rows as they come: bundles first, then the registry (trainable families too)
    {"id": "/data/models/fields 2024", "task": "classes", "state": "ready", "runnable": True, "bundle": True,
     "name": "fields 2024", "classes": ["background", "wheat", "maize"], "description": "fields: trained"},
    {"id": "clip-vit-b-16", "task": "classes", "state": "ready", "runnable": True, "bundle": False},
    {"id": "clip-vit-b-16-tiny", "task": "classes", "state": "ready", "runnable": True, "test_model": True},
    {"id": "unetformer-r18", "task": "trainable", "state": "trainable", "runnable": False,
     "description": "UNetFormer, trained whole"},
    {"id": "unetformer-r18-tiny", "task": "trainable", "state": "trainable", "runnable": False, "test_model": True},
    {"id": "sam-head-litemedsam", "task": "trainable", "state": "trainable", "runnable": False},
]


class Bar:
    """The message bar's calls, as the panel makes them."""

    def __init__(self):
        self.messages: list[tuple[str, object]] = []

    def pushMessage(self, title, text, *args):  # noqa: N802 - QGIS API
        level = next((a for a in args if isinstance(a, Qgis.MessageLevel)), Qgis.MessageLevel.Info)
        self.messages.append((text, level))


class Iface:
    def __init__(self):
        self.bar = Bar()

    def messageBar(self):  # noqa: N802 - QGIS API
        return self.bar


def no_backend():
    raise AssertionError("no backend in this test")


@pytest.fixture
def panel(qgis_new_project, tmp_path):
    trained = []
    widget = TrainPanel(Iface(), no_backend, trained.append)
    widget.trained = trained
    widget.folder.setFilePath(str(tmp_path / "models"))
    yield widget
    widget.shutdown()
    widget.deleteLater()


def set_up(panel, raster, labels, field="kind", **values):
    panel.raster.setLayer(raster)
    panel.labels.setLayer(labels)
    panel.field.setField(field)
    for name, value in values.items():
        widget = getattr(panel, name)
        if hasattr(widget, "setValue"):
            widget.setValue(value)
        else:
            widget.setCurrentIndex(widget.findData(value))


def table(panel) -> list[tuple[str, str]]:
    return [(panel.classes.item(r, 0).text(), panel.classes.item(r, 1).text()) for r in range(panel.classes.rowCount())]


def test_the_request_from_a_geopackage_field_and_an_edited_class_table(panel, tmp_path):
    raster, labels = raster_layer(tmp_path), labelled_gpkg(tmp_path)
    set_up(panel, raster, labels, "kind", epochs=3, chip=128, stride=64, batch_size=4, mode="area",
           validation="east")
    panel.lr.setValue(0.0005)
    assert table(panel) == [(k, k) for k in sorted(KINDS)]  # each value named by itself to start
    panel.set_class_name("house", "building")
    panel.set_class_name("garage", "building")  # two values, one class
    panel.set_class_name("shed", "  ")  # left out
    panel.name.setText("my buildings")
    job = panel.parameters().to_request()
    request = job.request
    assert request.raster == raster.source()
    assert (request.labels, request.labels_layer, request.field) == (str(tmp_path / "labels.gpkg"), "labels", "kind")
    assert request.classes == {"garage": "building", "house": "building", "shed": None}
    assert (request.mode, request.area, request.validation, request.validation_layer) == ("area", None, "east", None)
    assert (request.epochs, request.chip, request.stride, request.batch_size, request.lr) == (3, 128, 64, 4, 0.0005)
    assert request.out == str(tmp_path / "models" / "my buildings") and request.name == "my buildings"
    assert request.model == "unetformer-r18" and not request.resume and job.exported == []
    assert not list((tmp_path / "models").glob(".rsseg-train-*"))  # a file-backed layer is read where it is
    job.finish("failed")
    assert run_folder_state(request.out) == NEW


def test_the_class_field_combo_fills_the_table_from_the_layer_s_values(panel, tmp_path):
    labels = labelled_gpkg(tmp_path)
    set_up(panel, raster_layer(tmp_path), labels, "code")
    assert table(panel) == [("1", "1"), ("2", "2"), ("3", "3")]  # numbers in order, as text
    panel.labels.setLayer(buildings_layer())  # the footprints: "building" is the one text field
    assert panel.field.currentField() == "building" and table(panel) == [("yes", "yes")]
    assert panel.name.text().startswith("buildings 20")  # named after the label layer and the time
    panel.field.setField("osm_id")  # 43 values: still a table (up to 254)
    assert panel.classes.rowCount() == 43


def test_a_memory_layer_and_a_filtered_area_go_to_a_temporary_geopackage_removed_after(panel, tmp_path):
    labels = memory_labels()
    area = buildings_layer()
    area.setSubsetString('"osm_id" < 92642')
    set_up(panel, raster_layer(tmp_path), labels, "kind", mode="area")
    panel.area.setLayer(area)
    job = panel.parameters().to_request()
    request = job.request
    work = Path(request.labels).parent
    assert work.parent == tmp_path / "models" and work.name.startswith(".rsseg-train-")
    assert Path(request.labels).name == "labels.gpkg" and request.labels_layer == "labels"
    assert Path(request.area).name == "area.gpkg" and request.area_layer == "area"
    assert job.exported == ["drawn labels", "buildings"]
    written = QgsVectorLayer(f"{request.labels}|layername=labels", "written", "ogr")
    assert written.featureCount() == labels.featureCount() == 43
    assert sorted(written.uniqueValues(written.fields().indexOf("kind"))) == sorted(KINDS)
    assert written.crs() == labels.crs()
    filtered = QgsVectorLayer(f"{request.area}|layername=area", "area", "ogr")
    assert 0 < filtered.featureCount() == area.featureCount() < 43  # the filter, not the whole file
    job.finish("cancelled")
    assert not work.exists() and run_folder_state(request.out) == NEW


@pytest.mark.parametrize("key", [key for key, _ in VALIDATION_CHOICES])
def test_validation_choices(panel, tmp_path, key):
    set_up(panel, raster_layer(tmp_path), labelled_gpkg(tmp_path), "kind", validation=key)
    held_out = memory_labels("held out")
    panel.validation_layer.setLayer(held_out)
    assert panel.validation_layer.isEnabled() == (key == "layer")
    job = panel.parameters().to_request()
    assert job.request.validation == key
    if key == "layer":  # a memory layer: written for the run (the request has no field for a layer name)
        assert Path(job.request.validation_layer).name == "validation.gpkg" and job.exported == ["held out"]
    else:
        assert job.request.validation_layer is None and job.exported == []
    job.finish("failed")


def test_sparse_labels_take_no_area(panel, tmp_path):
    set_up(panel, raster_layer(tmp_path), labelled_gpkg(tmp_path), "kind", mode="sparse")
    panel.area.setLayer(buildings_layer())
    assert not panel.area.isEnabled()
    job = panel.parameters().to_request()
    assert (job.request.mode, job.request.area) == ("sparse", None)
    job.finish("failed")


def errors(panel) -> tuple[str, str]:
    with pytest.raises(TrainError) as caught:
        panel.parameters().to_request()
    return caught.value.field, str(caught.value)


def test_errors_name_the_field(panel, tmp_path):
    raster, labels = raster_layer(tmp_path), labelled_gpkg(tmp_path)
    set_up(panel, raster, labels, "kind")
    panel.labels.setLayer(None)
    assert errors(panel) == ("labels", "Label layer: choose the polygon layer with your labels")
    panel.labels.setLayer(labels)
    for value in KINDS:
        panel.set_class_name(value, "")
    assert errors(panel)[0] == "classes" and "name at least one class" in errors(panel)[1]
    panel.set_class_name("house", "house, home")
    assert errors(panel) == ("classes", "Classes: “house, home”: a class name cannot hold a comma or a semicolon")
    panel.fill_classes()
    panel.validation.setCurrentIndex(panel.validation.findData("layer"))
    assert errors(panel)[0] == "validation_layer"
    panel.validation.setCurrentIndex(panel.validation.findData("blocks"))
    empty = QgsVectorLayer("Polygon?crs=EPSG:32616&field=kind:string", "empty", "memory")
    QgsProject.instance().addMapLayer(empty)
    panel.labels.setLayer(empty)
    assert errors(panel) == ("labels", "Label layer: “empty” has no polygons")
    panel.labels.setLayer(labels)
    panel.field.setField("kind")
    panel.raster.setLayer(None)
    assert errors(panel)[0] == "raster"
    panel.raster.setLayer(raster)
    panel.name.setText("taken")
    (tmp_path / "models" / "taken").mkdir(parents=True)
    (tmp_path / "models" / "taken" / "model.json").write_text("{}")
    assert errors(panel) == ("out", f"Output folder: “{tmp_path / 'models' / 'taken'}” already holds a trained "
                                    "model: choose another name")
    assert not list((tmp_path / "models").glob(".rsseg-train-*"))  # nothing made for a refused run


def test_start_says_what_is_wrong_in_the_message_bar(panel, tmp_path):
    panel.backend = lambda: None  # not reached: the parameters are refused first
    set_up(panel, raster_layer(tmp_path), labelled_gpkg(tmp_path), "kind")
    panel.labels.setLayer(None)
    panel.start()
    assert panel.task is None
    assert panel.iface.bar.messages == [("Label layer: choose the polygon layer with your labels",
                                         Qgis.MessageLevel.Warning)]


def test_resume_appears_for_an_unfinished_run(panel, tmp_path):
    set_up(panel, raster_layer(tmp_path), labelled_gpkg(tmp_path), "kind")
    panel.name.setText("half done")
    assert panel.resume_button.isHidden()
    checkpoints = tmp_path / "models" / "half done" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "step-0000017.json").write_text("{}")
    (checkpoints.parent / "run.json").write_text("{}")  # what the backend writes beside its checkpoints
    panel.name.setText("half done")  # the folder is looked at again when the output changes
    panel._output_changed()
    assert not panel.resume_button.isHidden() and "unfinished" in panel.where.text()
    assert errors(panel)[0] == "out" and "resume it" in errors(panel)[1]
    job = panel.parameters(resume=True).to_request()
    assert job.request.resume and job.request.out == str(checkpoints.parent)
    assert job.finish("failed") and run_folder_state(checkpoints.parent) == UNFINISHED  # never removed


def test_model_families_from_the_model_list(panel):
    assert [panel.model.itemData(i) for i in range(panel.model.count())] == [
        "unetformer-r18", "sam-head-litemedsam", "rfm-seg-r18-rn50", "rfm-seg-r18-vit-b-32",
        "sgseg-vit-b-16", "sgseg-convnext-l"]  # the protocol's
    panel.set_models(ROWS, show_test=False)
    assert [panel.model.itemData(i) for i in range(panel.model.count())] == ["unetformer-r18", "sam-head-litemedsam"]
    panel.set_models(ROWS, show_test=True)
    assert [panel.model.itemData(i) for i in range(panel.model.count())] == [
        "unetformer-r18", "unetformer-r18-tiny", "sam-head-litemedsam"]
    panel.model.setCurrentIndex(1)
    panel.set_models(ROWS, show_test=True)  # a refresh keeps the choice
    assert panel.model.currentData() == "unetformer-r18-tiny"


FUSED = "rfm-seg-r18-rn50"


def trained_model(folder: Path, builder: str, classes=("background", "tree")) -> str:
    """A trained model's folder as the plugin reads it: its manifest (model.json) names the builder."""
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"builder": builder, "name": folder.name,
                                                   "classes": list(classes)}))
    return str(folder.resolve())


def host_rows(tmp_path) -> tuple[list[dict], str, str]:
    """The model list with RFM-Seg and two trained models, a UNetFormer and a SAM head."""
    trees = trained_model(tmp_path / "bundles" / "trees", "unetformer")
    roofs = trained_model(tmp_path / "bundles" / "roofs", "sam_head", ("background", "roof"))
    rows = [{"id": trees, "task": "classes", "bundle": True, "name": "trees", "classes": ["background", "tree"]},
            {"id": roofs, "task": "classes", "bundle": True, "name": "roofs", "classes": ["background", "roof"]},
            *ROWS, {"id": FUSED, "task": "trainable", "runnable": False, "description": "RemoteCLIP fused into"},
            {"id": f"{FUSED}-tiny", "task": "trainable", "runnable": False, "test_model": True}]
    return rows, trees, roofs


def host_items(panel) -> list[tuple[str, str]]:
    return [(panel.host.itemText(i), panel.host.itemData(i)) for i in range(panel.host.count())]


@pytest.fixture
def no_stored_host():
    settings = QgsSettings()
    before = settings.value(TRAIN_HOST_KEY, None)
    settings.remove(TRAIN_HOST_KEY)
    yield settings
    settings.remove(TRAIN_HOST_KEY)
    if before is not None:
        settings.setValue(TRAIN_HOST_KEY, before)


def test_the_host_model_row_shows_for_rfm_seg_with_your_unetformers(panel, tmp_path, no_stored_host):
    rows, trees, roofs = host_rows(tmp_path)
    set_up(panel, raster_layer(tmp_path), labelled_gpkg(tmp_path), "kind")
    panel.set_models(rows, show_test=True)
    assert panel.model.currentData() == "unetformer-r18" and panel.host_row.isHidden()
    assert panel.host_label.isHidden() and panel.host_note.isHidden()
    job = panel.parameters().to_request()
    assert job.request.host is None  # a family that builds on nothing takes no host
    job.finish("failed")
    panel.model.setCurrentIndex(panel.model.findData(FUSED))
    assert not panel.host_row.isHidden() and not panel.host_label.isHidden() and panel.host_row.isEnabled()
    assert host_items(panel) == [("trees — background, tree", trees)]  # UNetFormers only: not the SAM head's
    assert panel.host.currentData() == trees and "press Browse…" in panel.host_note.text()
    job = panel.parameters().to_request()
    assert (job.request.model, job.request.host) == (FUSED, trees)
    job.finish("failed")
    panel.model.setCurrentIndex(panel.model.findData(f"{FUSED}-tiny"))  # the test twin too
    assert not panel.host_row.isHidden() and panel.host.currentData() == trees
    panel.model.setCurrentIndex(panel.model.findData("sam-head-litemedsam"))
    assert panel.host_row.isHidden() and panel.parameters().host is None


def test_browse_takes_a_trained_unetformer_s_folder_and_refuses_others(panel, tmp_path, no_stored_host):
    rows, trees, roofs = host_rows(tmp_path)
    set_up(panel, raster_layer(tmp_path), labelled_gpkg(tmp_path), "kind")
    panel.set_models([r for r in rows if not r.get("bundle")], show_test=False)  # My models has none
    panel.model.setCurrentIndex(panel.model.findData(FUSED))
    assert host_items(panel) == [] and "My models has none" in panel.host_note.text()
    assert errors(panel) == ("host", "Host model: rfm-seg-r18-rn50 fuses into a UNetFormer model you trained "
                                     "before: choose that model")
    (tmp_path / "empty").mkdir()
    assert not panel.set_host(str(tmp_path / "empty")) and not panel.set_host(roofs)
    assert [text for text, _ in panel.iface.bar.messages] == [
        f"Host model: “{tmp_path / 'empty'}” is not a trained model folder (it has no model.json): choose the "
        "folder of a UNetFormer model you trained",
        f"Host model: “roofs” is a SAM head model; {FUSED} fuses into a UNetFormer model: choose one you trained"]
    assert host_items(panel) == []
    assert panel.set_host(str(Path(trees) / "model.json"))  # the manifest stands for its folder
    assert host_items(panel) == [("trees — background, tree", trees)] and panel.host.currentData() == trees
    assert "press Browse…" in panel.host_note.text()
    job = panel.parameters().to_request()
    assert job.request.host == trees
    job.finish("failed")
    panel.set_models([r for r in rows if not r.get("bundle")], show_test=False)  # a refresh keeps the choice
    assert panel.host.currentData() == trees
    panel.model.setCurrentIndex(panel.model.findData("unetformer-r18"))
    assert not panel.set_host(trees)  # a family that takes no host: refused, and said so
    assert panel.iface.bar.messages[-1][0] == ("Host model: unetformer-r18 trains on its own and takes no host "
                                               "model: leave it empty")


def test_the_host_chosen_last_time_is_chosen_again(panel, tmp_path, no_stored_host):
    rows, trees, roofs = host_rows(tmp_path)
    elsewhere = trained_model(tmp_path / "shared" / "forest", "unetformer")  # not in My models: Browse…'d
    no_stored_host.setValue(TRAIN_HOST_KEY, elsewhere)
    panel.set_models(rows, show_test=False)
    panel.model.setCurrentIndex(panel.model.findData(FUSED))
    assert host_items(panel) == [("trees — background, tree", trees), ("forest — background, tree", elsewhere)]
    assert panel.host.currentData() == elsewhere
    no_stored_host.setValue(TRAIN_HOST_KEY, roofs)  # another family's model is not offered
    other = TrainPanel(panel.iface, no_backend, lambda result: None)
    try:
        other.set_models(rows, show_test=False)
        other.model.setCurrentIndex(other.model.findData(FUSED))
        assert host_items(other) == [("trees — background, tree", trees)] and other.host.currentData() == trees
    finally:
        other.shutdown()
        other.deleteLater()


def test_a_resumed_run_keeps_its_host_unchecked(panel, tmp_path, no_stored_host):
    """Resume continues with the settings the run started with: the host row's state does not matter."""
    set_up(panel, raster_layer(tmp_path), labelled_gpkg(tmp_path), "kind")
    panel.set_models([], show_test=False)
    panel.model.setCurrentIndex(panel.model.findData(FUSED))
    panel.name.setText("half fused")
    checkpoints = tmp_path / "models" / "half fused" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "step-0000017.json").write_text("{}")
    (checkpoints.parent / "run.json").write_text("{}")
    job = panel.parameters(resume=True).to_request()
    assert job.request.resume and job.request.host is None and job.request.model == FUSED


def test_my_models_come_first_in_the_segment_list_and_families_never_show():
    items = picker_items(ROWS, "classes", show_test=False)
    assert [(i.label, i.model) for i in items[:2]] == [
        ("My models", None),
        ("fields 2024 — background, wheat, maize", "/data/models/fields 2024")]
    assert "/data/models/fields 2024" in items[1].tooltip
    assert not [i for i in items if i.model and ("unetformer" in i.model or "sam-head" in i.model)]
    assert [i.model for i in picker_items(ROWS, "sentence", show_test=True) if i.model] == []


def test_a_bundle_s_classes_come_from_its_row_or_its_manifest(tmp_path):
    folder = tmp_path / "roofs"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({"classes": ["background", "roof"]}))
    assert bundle_classes(str(folder)) == ["background", "roof"] and run_folder_state(folder) == BUNDLE
    assert bundle_classes("/data/models/fields 2024", ROWS) == ["background", "wheat", "maize"]
    assert bundle_classes("clip-vit-b-16", ROWS) == [] and bundle_classes(str(tmp_path / "nothing")) == []


def test_progress_percent_follows_epochs_and_steps():
    assert train_percent("prepare", 1, 2) == 2.5
    assert train_percent("train", 0, 4, {"epoch": 1, "step": 10, "steps": 40}) == pytest.approx(5 + 95 * 0.25)
    assert train_percent("train", 2, 4, {"epoch": 2, "loss": 0.3}) == pytest.approx(5 + 95 * 0.5)
    assert train_percent("train", 4, 4, {}) == 100.0 and train_percent("other", 1, 2) is None


# -- with the real worker ---------------------------------------------------------------------------------------
def wait(widget, seconds: float = 600) -> None:  # the machine may be shared: generous limits
    assert pump(lambda: widget.task is None, seconds), "the run did not finish in time"


def choose_tiny(dock) -> None:
    """The model list as the dock gets it from the worker, test models shown, the tiny family chosen."""
    assert pump(lambda: bool(dock.models) and dock.side_task is None, 120), "the models were not listed"
    dock.show_test.setChecked(True)  # the tiny twin is a test model
    panel = dock.train_panel
    panel.model.setCurrentIndex(panel.model.findData(TINY))
    assert panel.model.currentData() == TINY


def test_train_in_the_dock_then_segment_with_the_new_model(started_plugin, worker, qgis_iface, tmp_path):
    """Train tab → the tiny family for one epoch on the SpaceNet footprints → summary and IoU table → the new
    model selected in the Segment tab with its classes → a segmentation with it adds its layers."""
    dock = started_plugin.show_dock()
    panel = dock.train_panel
    choose_tiny(dock)
    raster, labels = raster_layer(tmp_path), memory_labels()
    set_up(panel, raster, labels, "kind", epochs=1, chip=64, batch_size=4, validation="east")
    for value in ("house", "garage", "shed"):
        panel.set_class_name(value, "building")
    panel.folder.setFilePath(str(tmp_path / "bundles"))
    panel.name.setText("atlanta buildings")
    panel.start()
    assert panel.task is not None and not panel.start_button.isEnabled() and panel.cancel_button.isEnabled()
    work = next((tmp_path / "bundles").glob(".rsseg-train-*"))  # the memory layer, written for the run
    seen = []
    assert pump(lambda: seen.append(panel.status.text()) or panel.task is None, 600), "training did not finish"
    result = panel.last_result
    assert result is not None, qgis_iface.messageBar().get_messages(Qgis.Critical)
    bundle = tmp_path / "bundles" / "atlanta buildings"
    assert result.model == str(bundle.resolve()) and run_folder_state(bundle) == BUNDLE and not work.exists()
    assert result.classes == ["background", "building"] and result.epochs == 1 and result.val_chips > 0
    assert any(text.startswith("epoch 1/1") for text in seen)  # the live line: epoch, step, loss
    assert panel.progress.value() == 100 and not panel.summary.isHidden()
    assert "validation mIoU" in panel.summary.text() and "building: IoU" in panel.summary.text()
    assert [panel.iou.item(r, 0).text() for r in range(panel.iou.rowCount())] == ["background", "building"]
    assert "epoch 1/1: loss" in panel.log.toPlainText()
    assert any("trained “atlanta buildings”" in m for m in qgis_iface.messageBar().get_messages(Qgis.Success))
    # the Segment tab: the new model, its classes, and "My models" once the list is refreshed
    assert dock.model_id() == result.model and dock.prompt.currentText() == "background, building"
    assert pump(lambda: any(r.get("bundle") for r in dock.models) and dock.side_task is None, 120)
    assert dock.model.itemText(0) == "— My models —" and dock.model.currentData() == result.model
    assert dock.model.currentText().startswith("atlanta buildings — background, building")
    before = set(QgsProject.instance().mapLayers())
    dock.set_layer(raster)
    dock.run()
    assert pump(lambda: dock.task is None, 300), "the segmentation did not finish"
    added = dock.last_added
    assert added is not None, qgis_iface.messageBar().get_messages(Qgis.Critical)
    assert [c.label for c in added.raster.renderer().classes()] == ["background", "building"]
    assert added.raster.extent() == raster.extent() and set(QgsProject.instance().mapLayers()) > before


def test_cancel_in_the_first_epoch_leaves_nothing_and_after_one_resume_continues(started_plugin, worker,
                                                                                    qgis_iface, tmp_path):
    dock = started_plugin.show_dock()
    panel = dock.train_panel
    choose_tiny(dock)
    raster, labels = raster_layer(tmp_path), labelled_gpkg(tmp_path)
    set_up(panel, raster, labels, "kind", epochs=2, chip=64, batch_size=4, validation="south")
    panel.folder.setFilePath(str(tmp_path / "bundles"))
    panel.name.setText("cancelled")
    panel.start()
    task = panel.task
    assert pump(lambda: task.snapshot()[0] == "train" or panel.task is None, 120)
    panel.cancel()
    wait(panel)
    assert panel.last_result is None and not (tmp_path / "bundles" / "cancelled").exists()
    assert any("cancelled: nothing was saved" in m for m in qgis_iface.messageBar().get_messages(Qgis.Info))
    # cancelled after the first epoch: its checkpoint stays and Resume finishes the run
    panel.name.setText("resumed")
    panel.start()
    task = panel.task
    assert pump(lambda: task.snapshot()[1] >= 1 or panel.task is None, 600)
    panel.cancel()
    wait(panel)
    folder = tmp_path / "bundles" / "resumed"
    assert panel.last_result is None  # cancelled in the second epoch (tens of steps)
    assert run_folder_state(folder) == UNFINISHED and not panel.resume_button.isHidden()
    assert any("press Resume" in m for m in qgis_iface.messageBar().get_messages(Qgis.Info))
    panel.resume_button.click()
    assert panel.task is not None and panel.task.job.request.resume
    wait(panel)
    result = panel.last_result
    assert result is not None, qgis_iface.messageBar().get_messages(Qgis.Critical)
    assert result.epochs == 2 and run_folder_state(folder) == BUNDLE and panel.resume_button.isHidden()
    with sqlite3.connect(tmp_path / "labels.gpkg") as db:  # the user's labels are untouched
        assert db.execute("select count(*) from labels").fetchone() == (43,)


def test_the_parameters_dataclass_is_what_processing_fills_too(tmp_path, qgis_new_project):
    """TrainParameters without the panel: classes None names every value by itself."""
    labels = labelled_gpkg(tmp_path)
    job = TrainParameters(raster=raster_layer(tmp_path), labels=labels, field="code",
                          out=str(tmp_path / "m")).to_request()
    assert job.request.classes == {"1": "1", "2": "2", "3": "3"} and job.request.out == str(tmp_path / "m")
    job.finish("failed")


def test_picking_a_trained_model_in_the_segment_tab_fills_its_classes(started_plugin, monkeypatch):
    monkeypatch.delenv("RSSEG_PYTHON", raising=False)
    dock = started_plugin.show_dock()
    if dock.python.filePath():
        pytest.skip("a backend is found on this machine without settings: the dock would list its models")
    assert [dock.tabs.tabText(i) for i in range(dock.tabs.count())] == ["Segment", "Train"]
    dock.mode_sentence.setChecked(True)
    dock.models = ROWS
    dock._show_test_toggled()  # as after a listing: both tabs' lists from the rows
    assert [dock.train_panel.model.itemData(i) for i in range(dock.train_panel.model.count())] == [
        "unetformer-r18", "sam-head-litemedsam"]
    dock.mode_classes.setChecked(True)
    assert dock.model.itemText(0) == "— My models —"
    dock.prompt.setEditText("tree, soil")
    dock.model.setCurrentIndex(1)
    dock.model.activated.emit(1)  # what a user's pick sends
    assert dock.model_id() == "/data/models/fields 2024"
    assert dock.prompt.currentText() == "background, wheat, maize"
    dock.model.setCurrentIndex(dock.model.findData("clip-vit-b-16"))
    dock.model.activated.emit(dock.model.currentIndex())
    assert dock.prompt.currentText() == "background, wheat, maize"  # another model keeps the typed classes
    dock.select_model("/data/models/other", ["background", "roof"])  # trained just now: not listed yet
    assert dock.model_id() == "/data/models/other" and dock.prompt.currentText() == "background, roof"


def test_a_family_without_its_pretrained_weights_offers_their_button(qgis_new_project):
    """unetformer-r18 starts from ImageNet weights: when the model list says they are missing, the tab says so
    and offers Download (Import weights… for a file without an address); the dock's buttons do the rest."""
    asked = []
    panel = TrainPanel(Iface(), no_backend, lambda result: None,
                       on_weights=lambda action, model: asked.append((action, model)))
    missing = {"name": "resnet18.a1_in1k.safetensors", "size": 46807446, "urls": ["https://example.org/r18"],
               "present": False}
    rows = [dict(ROWS[3], weights=[missing], weights_present=False), ROWS[4],
            dict(ROWS[5], weights=[dict(missing, name="lite_medsam.pth", urls=[])], weights_present=False)]
    panel.set_models(rows, show_test=True)
    panel.model.setCurrentIndex(panel.model.findData("unetformer-r18"))
    assert not panel.weights_row.isHidden() and panel.weights_button.text() == "Download"
    assert panel.weights_note.text() == ("unetformer-r18 starts from pretrained weights (45 MB) that are not "
                                         "installed; without them it trains from scratch. Press Download.")
    panel.weights_button.click()
    panel.model.setCurrentIndex(panel.model.findData("sam-head-litemedsam"))
    assert panel.weights_button.text() == "Import weights…"
    panel.weights_button.click()
    assert asked == [("download", "unetformer-r18"), ("import", "sam-head-litemedsam")]
    panel.model.setCurrentIndex(panel.model.findData(TINY))  # random start: nothing to get
    assert panel.weights_row.isHidden()
    panel.deleteLater()
