"""A trained SGSeg model (open vocabulary) segments class names it never trained on, from the dock and from
Processing, through the real worker (`rsseg serve` on this venv's Python) in real headless QGIS.

One tiny bundle is trained once, with the backend's train_layers on a small synthetic scene (red buildings,
yellow water on a field: tests/field_scenes.py): SGSeg's test twin, a few epochs (the path is checked here, not what it
learns: tests/backend/test_sgseg_learning.py). train_layers remembers it in "My models" (bundles/index.py), here a
folder of the module's, which the worker lists.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from my_models import dock_listing, pick, scene_training
from osgeo import gdal
from qgis.core import Qgis, QgsProcessingFeedback, QgsProject, QgsRasterLayer, QgsVectorLayer
from qt_events import wait_for

CLASSES = ["background", "building", "water"]
SGSEG = "sgseg-vit-b-16-tiny"  # SGSeg's test twin: a random tiny CLIP, fast on CPU
NEW = "lake, pond; roof; meadow"  # names the bundle never trained on; with semicolons, commas give synonyms
NEW_CLASSES = ["lake", "roof", "meadow"]  # a class's name is its first synonym


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """The SGSeg bundle, trained on the scene and remembered in the module's "My models"."""
    with scene_training(tmp_path_factory.mktemp("sgseg-dock")) as (train, raster, models):
        result = train(SGSEG, "any names", 2, lr=3e-3)
    assert result.classes == CLASSES
    manifest = json.loads((Path(result.model) / "model.json").read_text(encoding="utf-8"))
    assert manifest["builder"] == "sgseg" and manifest["config"]["open_vocabulary"] is True
    return {"models": models, "raster": raster, "model": result.model}


@pytest.fixture
def dock(bundle, started_plugin, monkeypatch):
    yield from dock_listing(bundle["models"], started_plugin, monkeypatch)


def test_the_dock_segments_class_names_the_sgseg_model_never_saw(dock, bundle, qgis_iface, tmp_path):
    model = bundle["model"]
    scene = QgsRasterLayer(str(bundle["raster"]), "scene", "gdal")
    assert scene.isValid()
    QgsProject.instance().addMapLayer(scene)
    rows = {r["id"]: r for r in dock.models if r.get("bundle")}
    assert model in rows and rows[model]["classes"] == CLASSES
    assert "open vocabulary, give it any class names" in rows[model]["description"].split(". ")[0]  # the tooltip's
    assert dock.model.itemText(0) == "— My models —"
    pick(dock, model)
    assert dock.model_id() == model and dock.model.currentText().startswith("any names — background, building")
    assert dock.mode_classes.isChecked() and dock.prompt.currentText() == "background, building, water"
    dock.prompt.setEditText(NEW)  # its classes replaced by names it never trained on
    before = set(QgsProject.instance().mapLayers())
    dock.set_layer(scene)
    dock.out_dir.setFilePath(str(tmp_path / "runs"))
    dock.run()
    assert dock.task is not None, qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Warning)
    wait_for(lambda: dock.task is None, 300)
    added = dock.last_added
    assert added is not None, qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical)
    assert dock.last_result.request["classes"] == ["lake, pond", "roof", "meadow"]
    assert [c.name for c in dock.last_result.classes] == NEW_CLASSES
    assert added.group.name().startswith(f"{NEW} — any names ")
    assert [c.label for c in added.raster.renderer().classes()] == NEW_CLASSES
    assert added.raster.crs() == scene.crs() and added.raster.extent() == scene.extent()
    assert added.vector is not None
    found = {f["class"] for f in added.vector.getFeatures()}
    assert found and found <= set(NEW_CLASSES)
    assert set(QgsProject.instance().mapLayers()) == before | {added.raster.id(), added.vector.id()}


def test_segment_classes_in_processing_takes_new_names_for_the_sgseg_model(provider, worker, bundle, tmp_path,
                                                                           qgis_new_project):
    from qgis import processing

    out = processing.run("rsseg:segment_classes", {
        "INPUT": str(bundle["raster"]), "CLASSES": "pond, lake; road", "MODEL": bundle["model"], "DEVICE": "cpu",
        "OUTPUT_RASTER": str(tmp_path / "mask.tif"), "OUTPUT_VECTOR": str(tmp_path / "polygons.gpkg"),
    }, feedback=QgsProcessingFeedback())
    mask = gdal.Open(out["OUTPUT_RASTER"])
    assert (mask.RasterXSize, mask.RasterYSize) == (128, 128)
    assert json.loads(mask.GetMetadataItem("CLASS_NAMES")) == {"0": "unlabelled", "1": "pond", "2": "road"}
    polygons = QgsVectorLayer(out["OUTPUT_VECTOR"], "polygons", "ogr")
    assert polygons.isValid()
    found = {f["class"] for f in polygons.getFeatures()}
    assert found and found <= {"pond", "road"}
