"""The plugin object QGIS creates: menu actions, and their removal on unload."""

from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QFileDialog

from .core.result_layers import ResultError, add_result_layers

MENU = "&RS RefSeg"


class RsRefSegPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.actions: list[QAction] = []

    def initGui(self) -> None:  # noqa: N802 - QGIS API
        icon = QIcon(str(Path(__file__).with_name("icon.svg")))
        action = QAction(icon, "Add segmentation result…", self.iface.mainWindow())
        action.setToolTip("Load an rsseg result.json as styled mask and polygon layers")
        action.triggered.connect(self.add_result_dialog)
        self.iface.addPluginToRasterMenu(MENU, action)
        self.actions.append(action)

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            action.deleteLater()
        self.actions.clear()

    def add_result_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.iface.mainWindow(), "Add segmentation result", "",
                                              "rsseg result (result.json);;JSON (*.json)")
        if path:
            self.add_result(path)

    def add_result(self, path: str) -> None:
        try:
            added = add_result_layers(path)
        except ResultError as exc:
            self.iface.messageBar().pushMessage("RS RefSeg", str(exc), level=Qgis.Critical, duration=10)
            return
        self.iface.messageBar().pushMessage("RS RefSeg", f"added “{added.group.name()}”", level=Qgis.Success,
                                            duration=5)
