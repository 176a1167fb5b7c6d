"""The dock segments with an RFM-Seg model picked under "My models", through the real worker (`rsseg serve` on
this venv's Python) in real headless QGIS.

Two tiny bundles are trained once, with the backend's train_layers on a small synthetic scene (red buildings,
yellow water on a field: tests/field_scenes.py): a UNetFormer host, then RFM-Seg's test twin fused into it. train_layers
remembers both in "My models" (bundles/index.py), here a folder of the module's, which the worker lists.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from my_models import dock_listing, pick, scene_training
from qgis.core import Qgis, QgsProject, QgsRasterLayer
from qt_events import wait_for

from rs_refseg_plugin.ui.dock import SegmentDock

CLASSES = ["background", "building", "water"]
HOST, FUSED = "unetformer-r18-tiny", "rfm-seg-r18-rn50-tiny"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """The host and the RFM-Seg bundle, trained on the scene and remembered in the module's "My models"."""
    with scene_training(tmp_path_factory.mktemp("rfm-dock")) as (train, raster, models):
        host = train(HOST, "pond host", 2)
        fused = train(FUSED, "yellow ponds", 1, host=host.model)
    assert host.classes == CLASSES and fused.classes == CLASSES
    return {"models": models, "raster": raster, "host": host.model, "fused": fused.model}


@pytest.fixture
def dock(bundles, started_plugin, monkeypatch):
    yield from dock_listing(bundles["models"], started_plugin, monkeypatch)


@pytest.fixture
def scene(bundles):
    layer = QgsRasterLayer(str(bundles["raster"]), "scene", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def segment(dock: SegmentDock, layer, out: Path, iface):
    dock.set_layer(layer)
    dock.out_dir.setFilePath(str(out))
    dock.run()
    assert dock.task is not None, iface.messageBar().get_messages(Qgis.MessageLevel.Warning)
    wait_for(lambda: dock.task is None, 300)
    added = dock.last_added
    assert added is not None, iface.messageBar().get_messages(Qgis.MessageLevel.Critical)
    return added


def class_labels(added) -> list[str]:
    return [c.label for c in added.raster.renderer().classes()]


def polygon_classes(added) -> set[str]:
    assert added.vector is not None
    return {f["class"] for f in added.vector.getFeatures()}


def test_an_rfm_seg_model_under_my_models_segments_into_its_classes(dock, bundles, scene, qgis_iface, tmp_path):
    fused = bundles["fused"]
    rows = {r["id"]: r for r in dock.models if r.get("bundle")}
    assert {fused, bundles["host"]} <= set(rows) and rows[fused]["classes"] == CLASSES
    assert dock.model.itemText(0) == "— My models —"
    pick(dock, fused)
    assert dock.model_id() == fused and dock.model.currentText().startswith("yellow ponds — background, building")
    assert dock.mode_classes.isChecked() and dock.prompt.currentText() == "background, building, water"
    before = set(QgsProject.instance().mapLayers())
    added = segment(dock, scene, tmp_path / "runs", qgis_iface)
    assert added.group.name().startswith("background, building, water — yellow ponds ")
    assert class_labels(added) == CLASSES
    assert added.raster.crs() == scene.crs() and added.raster.extent() == scene.extent()
    assert polygon_classes(added) and polygon_classes(added) <= set(CLASSES)
    assert set(QgsProject.instance().mapLayers()) == before | {added.raster.id(), added.vector.id()}


def test_a_class_with_synonyms_sets_its_prompts_and_gives_only_that_class(dock, bundles, scene, qgis_iface,
                                                                          tmp_path):
    pick(dock, bundles["fused"])
    dock.prompt.setEditText("water, a yellow pond;")  # with a semicolon, commas give a class's synonyms
    added = segment(dock, scene, tmp_path / "runs", qgis_iface)
    assert dock.last_result.request["classes"] == ["water, a yellow pond"]  # one class line, its synonym kept
    assert added.group.name().startswith("water, a yellow pond — yellow ponds ")
    assert class_labels(added) == ["water"] and polygon_classes(added) == {"water"}
    assert [c.name for c in dock.last_result.classes] == ["water"]
