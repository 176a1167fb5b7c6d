"""Runs inside the real QGIS desktop (qgis --code): a new user's first run, driven through the widgets.

Fresh profile, no backend set: the dock opens from the Plugins toolbar with its first-run panel;
"Use an existing environment…" is pressed and the file dialog answered with the backend's Python;
the models are listed; a class list runs; the summary shows; a second run goes into a new sub-folder
while the first run's layers stay. Screenshots of the first-run panel, the summary, the Processing
dialog and the window are saved, and a report of what was seen is written for the test. Paths come
from the environment. The work starts from a timer, once QGIS's event loop runs (an exit requested
during --code is ignored)."""

import json
import os
import time
import traceback
from pathlib import Path

from qgis import processing
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QLineEdit
from qgis.utils import iface, plugins

SHOTS = Path(os.environ["RSSEG_DESKTOP_SHOTS"])


def pump(seconds: float, until=lambda: False) -> None:
    deadline = time.monotonic() + seconds
    while not until() and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.02)


def visible_buttons(dock) -> list:
    panel = dock.first_run
    return [key for key, button in panel.buttons.items() if button.isVisibleTo(panel)] if panel.isVisible() else []


def run(dock) -> None:
    dock.run_button.click()
    pump(150, lambda: dock.task is None)
    pump(1)


def main():
    report_path = os.environ["RSSEG_DESKTOP_REPORT"]
    report = {"ok": False, "steps": []}

    def step(name: str) -> None:  # the report so far, so a hang shows where it happened
        report["steps"].append(name)
        with open(report_path, "w") as f:
            json.dump(report, f)

    try:
        plugin = plugins["rs_refseg_plugin"]
        layer = QgsRasterLayer(os.environ["RSSEG_DESKTOP_RASTER"], "neon", "gdal")
        QgsProject.instance().addMapLayer(layer)
        iface.setActiveLayer(layer)
        iface.mapCanvas().setExtent(layer.extent())
        step("toolbar")
        toolbar = iface.pluginToolBar()
        report["toolbar"] = {"visible": toolbar.isVisible(),
                             "has_button": plugin.toolbar_action in toolbar.actions()}
        plugin.toolbar_action.trigger()  # the visible button
        dock = plugin.dock
        pump(1)
        report["first_run"] = {"text": dock.first_run.text.text(), "buttons": visible_buttons(dock)}
        dock.grab().save(str(SHOTS / "dock-first-run.png"))

        step("python")
        dock.first_run.buttons["python"].click()  # "Use an existing environment…"
        pump(1)
        dialog = dock.python_dialog
        report["file_dialog"] = [type(dialog).__name__, dialog.isVisible()]
        name = dialog.findChild(QLineEdit, "fileNameEdit")  # the dialog's "File name" box
        name.setText(os.environ["RSSEG_DESKTOP_BACKEND"])  # what the user types or picks in it
        pump(0.5)
        report["file_dialog"].append(dialog.selectedFiles())
        dialog.accept()
        pump(120, lambda: bool(dock.models))
        report["models"] = len(dock.models)
        report["python"] = dock.python.filePath()

        step("set_layer")
        dock.set_layer(layer)
        dock.mode_classes.setChecked(True)
        dock.prompt.setEditText("tree, soil")
        dock.model.setEditText(os.environ.get("RSSEG_DESKTOP_MODEL", "clip-vit-b-16-tiny"))
        pump(0.5)
        report["after_setup_buttons"] = visible_buttons(dock)
        step("run")
        run(dock)
        first = dock.last_added
        report["summary_visible"] = dock.summary.isVisible()
        report["summary"] = dock.summary.text()
        dock.grab().save(str(SHOTS / "dock-summary.png"))
        run(dock)
        second = dock.last_added
        report["runs"] = [str(Path(a.raster.source()).parent) if a else None for a in (first, second)]
        report["first_still_loaded"] = bool(first and first.raster.isValid() and first.group.parent() is not None
                                            and Path(first.raster.source()).exists())

        step("dialog")
        dialog = processing.createAlgorithmDialog("rsseg:segment_classes", {"INPUT": layer.id(),
                                                                            "CLASSES": "tree, soil"})
        dialog.show()
        pump(1)
        dialog.grab().save(str(SHOTS / "processing-dialog.png"))
        dialog.close()

        step("mapCanvas")
        iface.mapCanvas().refreshAllLayers()
        iface.mapCanvas().waitWhileRendering()
        pump(1)
        root = QgsProject.instance().layerTreeRoot()
        groups = [(g.name(), [(node.name(), node.layer().crs().authid(), node.layer().extent().toString(1))
                              for node in g.findLayers()]) for g in root.findGroups()]
        iface.mainWindow().grab().save(str(SHOTS / "window.png"))
        report.update(ok=True, actions=[a.text() for a in plugin.actions], dock_layer=dock.layer.currentLayer().name(),
                      groups=groups, source_extent=layer.extent().toString(1), source_crs=layer.crs().authid(),
                      log=dock.log.toPlainText(),
                      colours=[c.color.name() for c in (second.raster.renderer().classes() if second else [])])
    except Exception:  # noqa: BLE001 - reported to the test
        report["error"] = traceback.format_exc()
    with open(report_path, "w") as f:
        json.dump(report, f)
    QgsProject.instance().removeAllMapLayers()  # temp-dir layers would open a modal dialog on exit
    QgsProject.instance().setDirty(False)  # and so would "save the changes?"
    QTimer.singleShot(200, iface.actionExit().trigger)


QTimer.singleShot(500, main)
