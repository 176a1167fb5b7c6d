"""The dock with referring models that find separate objects: "Objects to return (top-k)" for those models
only, the line that says which models run zero-shot and which need a trained checkpoint, and a sentence run
with top-k through the real worker (`rsseg serve` on this venv's Python) whose objects come back as one
polygon each, styled by score.

Real headless QGIS; the raster is a copy of a fixture in the test's folder.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsProject, QgsRasterLayer
from qt_events import wait_for

from rs_refseg_plugin.core.settings import PluginSettings
from rs_refseg_plugin.ui.dock import SegmentDock

NEON = Path(__file__).parents[1] / "data" / "neon_osbs_rgb.tif"


@pytest.fixture
def plugin(started_plugin, worker, monkeypatch):
    monkeypatch.setenv("RSSEG_PYTHON", sys.executable)  # the worker runs on this venv's interpreter
    return started_plugin


@pytest.fixture
def scene(tmp_path):
    """A copy of the NEON RGB orthophoto in the test's folder, as a layer of the project."""
    layer = QgsRasterLayer(str(shutil.copy(NEON, tmp_path / "scene.tif")), "scene", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def listed_dock(plugin) -> SegmentDock:
    """The dock once the worker has listed its models."""
    dock = plugin.show_dock()
    wait_for(lambda: bool(dock.models) and dock.side_task is None)
    return dock


def choose(dock: SegmentDock, model: str) -> None:
    """Pick `model` in the list as a user does."""
    index = dock.model.findData(model)
    assert index >= 0, [dock.model.itemText(i) for i in range(dock.model.count())]
    dock.model.setCurrentIndex(index)
    dock.model.activated.emit(index)


def heading_of(dock: SegmentDock, model: str) -> str:
    """The group heading the list shows `model` under."""
    index = dock.model.findData(model)
    while dock.model.itemData(index) is not None:
        index -= 1
    return dock.model.itemText(index)


def top_k_shown(dock: SegmentDock) -> bool:
    return not dock.top_k.isHidden() and dock.top_k.isEnabled() and not dock.top_k_label.isHidden()


def test_top_k_and_the_checkpoint_line_follow_the_chosen_model(plugin, scene, tmp_path):
    dock = listed_dock(plugin)
    dock.set_layer(scene)
    dock.out_dir.setFilePath(str(tmp_path / "runs"))
    dock.mode_sentence.setChecked(True)
    # a zero-shot model that finds objects: top-k, no checkpoint, "zero-shot" in its label and the line
    choose(dock, "zs-ref-clip-b16-sam-b")
    assert dock.model.currentText().endswith(", zero-shot") and heading_of(dock, "zs-ref-clip-b16-sam-b") in (
        "— Ready to run —", "— Need a download —")
    assert top_k_shown(dock) and (dock.top_k.minimum(), dock.top_k.maximum(), dock.top_k.value()) == (1, 100, 1)
    assert not dock.checkpoint.isEnabled()
    assert not dock.model_hint.isHidden() and dock.model_hint.text().startswith("Zero-shot: runs without training")
    dock.top_k.setValue(3)
    assert dock.parameters().top_k == 3 and dock.parameters().checkpoint is None
    # a referring model that needs a trained checkpoint: no top-k; the line and the panel name the button
    choose(dock, "rsrefseg-clip-b16-sam-b")
    assert heading_of(dock, "rsrefseg-clip-b16-sam-b") == "— Need a trained checkpoint —"
    assert "needs a trained checkpoint" in dock.model.currentText()
    assert not top_k_shown(dock) and dock.parameters().top_k is None and dock.checkpoint.isEnabled()
    assert not dock.model_hint.isHidden() and "“Choose checkpoint…”" in dock.model_hint.text()
    panel = dock.first_run
    assert panel.isVisibleTo(dock) and panel.buttons["checkpoint"].isVisibleTo(panel)
    assert panel.buttons["checkpoint"].text() == "Choose checkpoint…"
    dock.checkpoint.setFilePath(str(tmp_path / "step-100.json"))
    assert dock.model_hint.isHidden() and not panel.buttons["checkpoint"].isVisibleTo(panel)
    assert dock.parameters().checkpoint == str(tmp_path / "step-100.json")
    # a class list: never top-k, whatever the model
    dock.mode_classes.setChecked(True)
    assert not top_k_shown(dock) and dock.parameters().top_k is None and dock.model_hint.isHidden()
    # back to the sentence: the zero-shot model again, top-k as it was
    dock.mode_sentence.setChecked(True)
    choose(dock, "zs-ref-clip-b16-sam-b")
    assert top_k_shown(dock) and dock.parameters().top_k == 3


def test_a_sentence_with_top_k_adds_at_most_k_objects_styled_by_score(plugin, scene, qgis_iface, tmp_path):
    dock = listed_dock(plugin)
    dock.show_test.setChecked(True)  # the test-size twin: random weights, no downloads
    dock.set_layer(scene)
    dock.mode_sentence.setChecked(True)
    choose(dock, "zs-ref-clip-b16-sam-b-tiny")
    dock.prompt.setEditText("the building on the left")
    assert top_k_shown(dock)
    dock.top_k.setValue(3)
    runs = tmp_path / "runs"
    dock.out_dir.setFilePath(str(runs))
    dock.run()
    assert dock.task is not None and dock.task.request.top_k == 3 and dock.task.request.checkpoint is None
    wait_for(lambda: dock.task is None, 300)
    added = dock.last_added
    assert added is not None, qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical)
    assert added.group.name().startswith("the building on the left — zs-ref-clip-b16-sam-b-tiny ")
    vector = added.vector
    assert vector is not None and 1 <= vector.featureCount() <= 3
    assert {"instance_id", "rank", "score"} <= set(vector.fields().names())
    features = sorted(vector.getFeatures(), key=lambda f: f["rank"])
    assert [f["rank"] for f in features] == list(range(1, len(features) + 1))
    assert all(0.0 <= f["score"] <= 1.0 for f in features)
    assert [f["score"] for f in features] == sorted((f["score"] for f in features), reverse=True)
    renderer = vector.renderer()
    assert renderer.type() == "graduatedSymbol" and renderer.classAttribute() == "score"
    assert len(renderer.ranges()) == 5 and vector.labelsEnabled()
    assert added.raster.renderer().type() == "paletted"
    # the run's folder holds the finished outputs and nothing partial
    (folder,) = runs.iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["mask.tif", "polygons.gpkg", "result.json"]
    # top-k is remembered for the next session
    assert PluginSettings.load().top_k == 3
    again = SegmentDock(qgis_iface)
    try:
        assert again.top_k.value() == 3
    finally:
        again.shutdown()
        again.deleteLater()
