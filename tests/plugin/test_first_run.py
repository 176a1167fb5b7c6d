"""From a fresh profile to a first good result in the dock: the first-run panel, the model picker, the
inputs the CLI has (bands, resolution, nodata), drawn regions, summaries and one sub-folder per run.

Real headless QGIS and the real worker (`rsseg serve` on this venv's Python)."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsProject, QgsRasterLayer, QgsRectangle, QgsSettings, QgsVectorLayer
from qt_events import wait_for

from rs_refseg_plugin.core.layers import local_raster
from rs_refseg_plugin.core.settings import PREFIX
from rs_refseg_plugin.ui.first_run import next_step
from rs_refseg_plugin.ui.model_picker import picker_items

DATA = Path(__file__).parents[1] / "data"
NEON = DATA / "neon_osbs_rgb.tif"
ROWS = [
    {"id": "clip-vit-b-16", "task": "classes", "state": "download", "download_bytes": 600 * 2**20,
     "description": "CLIP ViT-B/16 (OpenAI). Open vocabulary."},
    {"id": "remoteclip-vit-b-32", "task": "classes", "state": "ready", "description": "RemoteCLIP."},
    {"id": "clip-vit-b-16-tiny", "task": "classes", "state": "ready", "test_model": True, "description": "Test."},
    {"id": "rsrefseg-vit-b", "task": "sentence", "state": "needs checkpoint", "description": "RSRefSeg."},
    {"id": "sam-vit-b", "task": "component", "state": "component", "runnable": False},
    {"id": "georsclip", "task": "classes", "state": "import", "description": "GeoRSCLIP."},
]


# --- the decisions, without a GUI ----------------------------------------------------------------------------

def test_the_next_step_names_what_is_missing_and_the_button_that_fixes_it():
    assert next_step("", None, "clip-vit-b-16", "", False).actions == ["setup", "python"]
    assert next_step("/venv/bin/python", None, "x", "", True).text.startswith("Listing")
    assert next_step("/venv/bin/python", None, "x", "", False).actions == ["refresh"]
    download = next_step("/venv/bin/python", ROWS, "clip-vit-b-16", "", False)
    assert download.actions == ["download", "import"] and "600 MB" in download.text
    assert next_step("/venv/bin/python", ROWS, "georsclip", "", False).actions == ["import"]
    assert next_step("/venv/bin/python", ROWS, "rsrefseg-vit-b", "", False).actions == ["checkpoint"]
    assert next_step("/venv/bin/python", ROWS, "rsrefseg-vit-b", "/runs/step-100.json", False) is None
    assert next_step("/venv/bin/python", ROWS, "remoteclip-vit-b-32", "", False) is None
    assert next_step("/venv/bin/python", ROWS, "a-bundle-id", "", False) is None  # the backend judges it


def test_the_picker_groups_models_by_what_they_need_and_hides_test_models():
    items = picker_items(ROWS, "classes", show_test=False)
    assert [(i.label, i.model) for i in items] == [
        ("Ready to run", None), ("remoteclip-vit-b-32 — ready", "remoteclip-vit-b-32"),
        ("Need a download", None), ("clip-vit-b-16 — download (600 MB)", "clip-vit-b-16"),
        ("Need a weights file", None), ("georsclip — weights file needed", "georsclip")]
    assert items[3].tooltip == "CLIP ViT-B/16 (OpenAI)"
    shown = [i.model for i in picker_items(ROWS, "classes", show_test=True) if i.model]
    assert shown[-1] == "clip-vit-b-16-tiny" and "sam-vit-b" not in shown  # components never
    assert [i.model for i in picker_items(ROWS, "sentence", show_test=False)] == [None, "rsrefseg-vit-b"]


# --- the dock ------------------------------------------------------------------------------------------------

@pytest.fixture
def fresh(started_plugin, monkeypatch):
    """A fresh profile: no backend interpreter set, no remembered prompts or folders."""
    monkeypatch.delenv("RSSEG_PYTHON", raising=False)
    monkeypatch.setattr("rs_refseg_plugin.core.settings.default_python", lambda: "")
    return started_plugin


def run(dock) -> None:
    dock.run()
    wait_for(lambda: dock.task is None)


def test_first_run_to_a_result_then_a_second_run_beside_it(fresh, qgis_iface, neon, tmp_path):
    dock = fresh.show_dock()
    panel = dock.first_run
    assert panel.isVisibleTo(dock) and [k for k, b in panel.buttons.items() if b.isVisibleTo(panel)] == \
        ["setup", "python"]
    dock._backend_installed(sys.executable)  # what "Use an existing environment…" does with the chosen file
    wait_for(lambda: bool(dock.models))
    assert QgsSettings().value(PREFIX + "models_cache")  # for the Processing algorithms' model lists
    assert dock.model.findData("test") < 0  # test models hidden by default
    dock.show_test.setChecked(True)
    assert dock.model.findData("test") >= 0
    dock.model.setCurrentIndex(dock.model.findData("test"))
    assert not panel.isVisibleTo(dock)  # nothing missing any more
    dock.set_layer(neon)
    dock.prompt.setEditText("tree, soil")
    dock.out_dir.setFilePath(str(tmp_path))
    run(dock)
    first = dock.last_added
    assert first is not None, qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical)
    summary = dock.summary.text()
    assert dock.summary.isVisibleTo(dock) and "tree: " in summary and " px, " in summary and "Outputs: " in summary
    first_folder = Path(first.raster.source()).parent
    assert first_folder.parent == tmp_path and str(first_folder) in summary
    run(dock)
    second = dock.last_added
    second_folder = Path(second.raster.source()).parent
    assert second_folder.parent == tmp_path and second_folder != first_folder  # nothing overwritten
    assert first.raster.isValid() and Path(first.raster.source()).exists() and first.group.parent() is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first_folder.name, second_folder.name])


def test_bands_resolution_and_nodata_reach_the_backend(fresh, qgis_iface, neon, tmp_path):
    dock = fresh.show_dock()
    dock._backend_installed(sys.executable)
    dock.set_layer(neon)
    labels = [dock.bands.combos[0].itemText(i) for i in range(dock.bands.combos[0].count())]
    assert labels == ["auto", "1: Red", "2: Green", "3: Blue"]
    for combo, band in zip(dock.bands.combos, (3, 2, 1)):
        combo.setCurrentIndex(combo.findData(band))
    pixel = neon.rasterUnitsPerPixelX()
    dock.resolution.setValue(round(pixel * 4, 2))
    dock.nodata_on.setChecked(True)
    dock.nodata.setValue(0)
    dock.prompt.setEditText("tree, soil")
    dock.model.setEditText("test")
    dock.out_dir.setFilePath(str(tmp_path))
    run(dock)
    added = dock.last_added
    assert added is not None, qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical)
    result = dock.last_result
    assert result.bands == [3, 2, 1] and result.request["nodata"] == 0
    assert added.raster.width() == pytest.approx(neon.width() * pixel / round(pixel * 4, 2), abs=2)


def test_a_drawn_rectangle_is_the_region(fresh, qgis_iface, neon, tmp_path):
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(neon.crs())
    dock = fresh.show_dock()
    dock._backend_installed(sys.executable)
    e = neon.extent()
    drawn = QgsRectangle(e.xMinimum(), e.yMinimum(), e.xMinimum() + e.width() / 2, e.yMinimum() + e.height() / 3)
    dock.draw_button.click()
    assert canvas.mapTool() is dock.rectangle_tool
    dock.rectangle_tool.extentChanged.emit(drawn)  # what dragging on the map ends with
    assert dock.region_key() == "drawn" and canvas.mapTool() is not dock.rectangle_tool
    dock.set_layer(neon)
    dock.prompt.setEditText("tree")
    dock.model.setEditText("test")
    dock.out_dir.setFilePath(str(tmp_path))
    run(dock)
    got = dock.last_added.raster.extent()
    pixel = neon.rasterUnitsPerPixelX()
    assert abs(got.width() - drawn.width()) <= 2 * pixel and abs(got.height() - drawn.height()) <= 2 * pixel


def test_the_polygon_list_prefers_the_users_layers(fresh, neon):
    dock = fresh.show_dock()
    crs = neon.crs().authid()
    result = QgsVectorLayer(f"Polygon?crs={crs}", "a result (polygons)", "memory")
    result.setCustomProperty("rs_refseg/result", True)
    mine = QgsVectorLayer(f"Polygon?crs={crs}", "zz my fields", "memory")
    QgsProject.instance().addMapLayers([result, mine])
    dock.polygons.setLayer(result)
    dock.region.setCurrentIndex(dock.region.findData("polygons"))
    assert dock.polygons.currentLayer() is mine


def test_a_missing_model_file_offers_its_button_and_no_command_line(fresh, qgis_iface, neon, tmp_path, monkeypatch):
    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(tmp_path / "no weights"))
    dock = fresh.show_dock()
    dock._backend_installed(sys.executable)
    dock.set_layer(neon)
    dock.prompt.setEditText("tree")
    dock.model.setEditText("clip-vit-b-16")
    dock.out_dir.setFilePath(str(tmp_path / "out"))
    run(dock)
    errors = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical)
    assert dock.last_added is None and any("press Download" in m for m in errors), errors
    assert not any("`" in m or "rsseg " in m for m in errors), errors
    assert dock.first_run.isVisibleTo(dock) and dock.first_run.buttons["download"].isVisibleTo(dock.first_run)
    assert dock.fix_subject == "clip-vit-b-16"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # the run folder is gone


def test_a_raster_inside_a_zip_is_read_in_place(fresh, qgis_iface, tmp_path):
    archive = tmp_path / "scene.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(NEON, "neon.tif")
    layer = QgsRasterLayer(f"/vsizip/{archive}/neon.tif", "zipped", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    assert local_raster(layer) == f"/vsizip/{archive}/neon.tif"
    dock = fresh.show_dock()
    dock._backend_installed(sys.executable)
    dock.set_layer(layer)
    dock.prompt.setEditText("tree")
    dock.model.setEditText("test")
    dock.out_dir.setFilePath(str(tmp_path / "out"))
    run(dock)
    assert dock.last_added is not None, qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical)


def test_help_buttons_open_the_matching_section(fresh):
    from qgis.PyQt.QtGui import QDesktopServices

    from rs_refseg_plugin.core.help import HELP_URL
    from tests.plugin.test_result_layers import UrlCatcher

    catcher = UrlCatcher()
    QDesktopServices.setUrlHandler("https", catcher, "open")
    try:
        fresh.show_dock().help_button.click()
    finally:
        QDesktopServices.unsetUrlHandler("https")
    assert catcher.urls == [f"{HELP_URL}#the-dock"]
