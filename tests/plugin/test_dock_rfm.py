"""The dock segments with an RFM-Seg model picked under "My models", through the real worker (`rsseg serve` on
this venv's Python) in real headless QGIS.

Two tiny bundles are trained once, with the backend's train_layers on a small synthetic scene (red buildings,
yellow water on a field): a UNetFormer host, then RFM-Seg's test twin fused into it. train_layers remembers
both in "My models" (bundles/index.py), here a folder of the module's, which the worker lists.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from qgis.core import Qgis, QgsProject, QgsRasterLayer
from qt_events import wait_for

from rs_refseg_plugin.core.backend import close_shared_backend
from rs_refseg_plugin.ui.dock import SegmentDock

SIZE, ORIGIN = 128, (300000.0, 5000000.0)
COLOURS = {"building": (200, 60, 50), "water": (220, 210, 60)}
CLASSES = ["background", "building", "water"]
HOST, FUSED = "unetformer-r18-tiny", "rfm-seg-r18-rn50-tiny"


def write_scene(root: Path) -> tuple[Path, Path]:
    """A field with red buildings and yellow water squares: the raster and its labels (field `kind`)."""
    import fiona
    import rasterio
    from rasterio.transform import from_origin
    from shapely.geometry import box, mapping

    rng = np.random.default_rng(0)
    image = np.empty((3, SIZE, SIZE), np.int16)
    image[:] = np.array((70, 140, 60))[:, None, None]
    taken = np.zeros((SIZE, SIZE), bool)
    features = []
    for k in range(20):
        kind = ("building", "water")[k % 2]
        w, h = rng.integers(12, 24, 2)
        c, r = rng.integers(0, SIZE - w), rng.integers(0, SIZE - h)
        if taken[max(r - 2, 0):r + h + 2, max(c - 2, 0):c + w + 2].any():
            continue
        image[:, r:r + h, c:c + w] = np.array(COLOURS[kind])[:, None, None]
        taken[r:r + h, c:c + w] = True
        features.append((kind, box(ORIGIN[0] + c, ORIGIN[1] - (r + h), ORIGIN[0] + c + w, ORIGIN[1] - r)))
    assert {kind for kind, _ in features} == {"building", "water"}
    raster = root / "scene.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=SIZE, height=SIZE, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(*ORIGIN, 1.0, 1.0)) as dst:
        dst.write(np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8))
    labels = root / "labels.gpkg"
    with fiona.open(labels, "w", driver="GPKG", crs="EPSG:32633",
                    schema={"geometry": "Polygon", "properties": {"kind": "str"}}) as out:
        for kind, geometry in features:
            out.write({"geometry": mapping(geometry), "properties": {"kind": kind}})
    return raster, labels


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """The host and the RFM-Seg bundle, trained on the scene and remembered in the module's "My models"."""
    import torch

    from rsseg.protocol.training import TrainLayersRequest
    from rsseg.training.layers_run import train_layers

    root = tmp_path_factory.mktemp("rfm-dock")
    models = root / "rsseg-models"
    raster, labels = write_scene(root)
    mp = pytest.MonkeyPatch()
    mp.setenv("RSSEG_MODELS_DIR", str(models))  # train_layers remembers each bundle here (remember_bundle)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        def train(model: str, out: str, epochs: int, host: "str | None" = None):
            return train_layers(TrainLayersRequest(
                raster=str(raster), labels=str(labels), field="kind", out=str(root / out), model=model, host=host,
                epochs=epochs, chip=64, stride=32, batch_size=8, validation="none", patience=0, device="cpu",
                seed=0))

        host = train(HOST, "pond host", 2)
        fused = train(FUSED, "yellow ponds", 1, host.model)
    finally:
        torch.set_num_threads(threads)
        mp.undo()
    assert host.classes == CLASSES and fused.classes == CLASSES
    return {"models": models, "raster": raster, "host": host.model, "fused": fused.model}


@pytest.fixture
def dock(bundles, started_plugin, monkeypatch):
    """The dock on a worker that lists the module's "My models", once it has listed them."""
    close_shared_backend()
    monkeypatch.setenv("RSSEG_PYTHON", sys.executable)
    monkeypatch.setenv("RSSEG_MODELS_DIR", str(bundles["models"]))
    dock = started_plugin.show_dock()
    wait_for(lambda: bool(dock.models) and dock.side_task is None, 120)
    yield dock
    close_shared_backend()


@pytest.fixture
def scene(bundles):
    layer = QgsRasterLayer(str(bundles["raster"]), "scene", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def pick(dock: SegmentDock, model: str) -> None:
    """Pick `model` in the list as a user does."""
    index = dock.model.findData(model)
    assert index >= 0, [dock.model.itemText(i) for i in range(dock.model.count())]
    dock.model.setCurrentIndex(index)
    dock.model.activated.emit(index)


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
