"""Runs inside the real QGIS desktop (qgis --code): Train → Segment, driven through the dock's widgets.

The backend is set (RSSEG_PYTHON), the raster and the building footprints are loaded; the dock opens, its
Train tab is filled in (raster, label layer, class field, the class table's name, the tiny test family,
one epoch of small chips, a side held out), Start is pressed and the run followed to its summary; the new
model is then selected in the Segment tab with its classes, and Run segments the raster with it. A report
of what was seen is written for the test, and screenshots of the Train tab. Paths come from the environment."""

import json
import os
import time
import traceback
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QScrollArea
from qgis.utils import iface, plugins

SHOTS = Path(os.environ["RSSEG_DESKTOP_SHOTS"])


def pump(seconds: float, until=lambda: False) -> bool:
    deadline = time.monotonic() + seconds
    while not until() and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.02)
    return until()


def main():
    report_path = os.environ["RSSEG_DESKTOP_REPORT"]
    report = {"ok": False, "steps": []}

    def step(name: str) -> None:  # the report so far, so a hang shows where it happened
        report["steps"].append(name)
        with open(report_path, "w") as f:
            json.dump(report, f)

    try:
        plugin = plugins["rs_refseg_plugin"]
        raster = QgsRasterLayer(os.environ["RSSEG_DESKTOP_RASTER"], "atlanta", "gdal")
        labels = QgsVectorLayer(os.environ["RSSEG_DESKTOP_LABELS"], "footprints", "ogr")
        QgsProject.instance().addMapLayers([raster, labels])
        iface.mapCanvas().setExtent(raster.extent())
        step("dock")
        plugin.toolbar_action.trigger()
        dock = plugin.dock
        report["listed"] = pump(120, lambda: bool(dock.models) and dock.side_task is None)
        dock.show_test.setChecked(True)  # the tiny family is a test model
        panel = dock.train_panel
        dock.tabs.setCurrentWidget(panel)
        step("train tab")
        panel.raster.setLayer(raster)
        panel.labels.setLayer(labels)
        panel.field.setField("building")
        report["table"] = [panel.classes.item(r, 0).text() for r in range(panel.classes.rowCount())]
        panel.classes.item(0, 1).setText("building")  # the value "yes" trains the class "building"
        panel.model.setCurrentIndex(panel.model.findData(os.environ.get("RSSEG_DESKTOP_TRAIN_MODEL",
                                                                        "unetformer-r18-tiny")))
        panel.epochs.setValue(1)
        panel.chip.setValue(64)
        panel.batch_size.setValue(4)
        panel.validation.setCurrentIndex(panel.validation.findData("east"))
        panel.folder.setFilePath(os.environ["RSSEG_DESKTOP_MODELS"])
        panel.name.setText("desktop buildings")
        pump(0.5)
        step("start")
        panel.start_button.click()
        statuses = []
        pump(float(os.environ.get("RSSEG_DESKTOP_TRAIN_S", "300")),
             lambda: statuses.append(panel.status.text()) or panel.task is None)
        report["statuses"] = sorted({s for s in statuses if s})[:20]
        result = panel.last_result
        report["trained"] = None if result is None else {"model": result.model, "classes": result.classes,
                                                         "epochs": result.epochs}
        report["train_summary"] = panel.summary.text()
        report["train_log"] = panel.log.toPlainText()
        report["iou_rows"] = panel.iou.rowCount()
        if result is None:
            raise RuntimeError(f"training gave no model: {panel.log.toPlainText()[-2000:]}")

        step("segment tab")
        report["selected"] = [dock.model_id(), dock.prompt.currentText()]
        pump(120, lambda: any(r.get("bundle") for r in dock.models) and dock.side_task is None)
        scroll = panel.findChild(QScrollArea)
        scroll.verticalScrollBar().setValue(scroll.verticalScrollBar().maximum())  # the summary
        pump(0.5)
        dock.grab().save(str(SHOTS / "dock-train.png"))
        report["picker"] = [dock.model.itemText(i) for i in range(min(3, dock.model.count()))]
        dock.tabs.setCurrentIndex(0)
        dock.set_layer(raster)
        pump(0.5)
        step("run")
        dock.run_button.click()
        pump(180, lambda: dock.task is None)
        pump(1)
        added = dock.last_added
        report["segmented"] = None if added is None else {
            "group": added.group.name(), "classes": [c.label for c in added.raster.renderer().classes()],
            "extent": added.raster.extent().toString(1), "source_extent": raster.extent().toString(1)}
        report["segment_log"] = dock.log.toPlainText()[-3000:]
        iface.mainWindow().grab().save(str(SHOTS / "window-train.png"))
        report["ok"] = True
    except Exception:  # noqa: BLE001 - reported to the test
        report["error"] = traceback.format_exc()
    with open(report_path, "w") as f:
        json.dump(report, f)
    QgsProject.instance().removeAllMapLayers()
    QgsProject.instance().setDirty(False)
    QTimer.singleShot(200, iface.actionExit().trigger)


QTimer.singleShot(500, main)
