"""Runs inside the real QGIS desktop (qgis --code): drive the RS RefSeg dock end to end, then write
a report of the layer tree and a screenshot, and quit. Paths come from the environment. The work
starts from a timer, once QGIS's event loop runs (an exit requested during --code is ignored)."""

import json
import os
import time
import traceback

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, plugins


def main():
    report_path = os.environ["RSSEG_DESKTOP_REPORT"]
    report = {"ok": False}
    try:
        plugin = plugins["rs_refseg_plugin"]
        layer = QgsRasterLayer(os.environ["RSSEG_DESKTOP_RASTER"], "neon", "gdal")
        QgsProject.instance().addMapLayer(layer)
        iface.setActiveLayer(layer)
        iface.mapCanvas().setExtent(layer.extent())
        actions = [a.text() for a in plugin.actions]
        plugin.layer_action.trigger()  # "Segment this layer…", as from the Layers panel
        dock = plugin.dock
        dock.mode_classes.setChecked(True)
        dock.prompt.setEditText("tree, soil")
        dock.model.setEditText(os.environ.get("RSSEG_DESKTOP_MODEL", "clip-vit-b-16-tiny"))
        dock.run_button.click()
        deadline = time.monotonic() + 150
        while dock.task is not None and time.monotonic() < deadline:
            QgsApplication.processEvents()
            time.sleep(0.02)
        for _ in range(50):  # let the canvas render the new layers
            QgsApplication.processEvents()
            time.sleep(0.02)
        iface.mapCanvas().refreshAllLayers()
        iface.mapCanvas().waitWhileRendering()
        QgsApplication.processEvents()
        root = QgsProject.instance().layerTreeRoot()
        groups = {g.name(): [(node.name(), node.layer().crs().authid(), node.layer().extent().toString(1))
                             for node in g.findLayers()] for g in root.findGroups()}
        iface.mainWindow().grab().save(os.environ["RSSEG_DESKTOP_SHOT"])
        report = {"ok": True, "actions": actions, "dock_layer": dock.layer.currentLayer().name(),
                  "groups": groups, "source_extent": layer.extent().toString(1), "source_crs": layer.crs().authid(),
                  "log": dock.log.toPlainText(), "colours": [c.color.name() for c in
                                                            (dock.last_added.raster.renderer().classes()
                                                             if dock.last_added else [])]}
    except Exception:  # noqa: BLE001 - reported to the test
        report["error"] = traceback.format_exc()
    with open(report_path, "w") as f:
        json.dump(report, f)
    QgsProject.instance().removeAllMapLayers()  # temp-dir layers would open a modal dialog on exit
    QgsProject.instance().setDirty(False)  # and so would "save the changes?"
    QTimer.singleShot(200, iface.actionExit().trigger)


QTimer.singleShot(500, main)
