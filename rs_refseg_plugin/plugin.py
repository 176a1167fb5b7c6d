"""The plugin object QGIS creates: the dock's action (Raster menu and the Plugins toolbar, which a
fresh profile shows), "Add segmentation result…", "Help", the Layers panel's "Segment this layer..."
action, the Processing provider; `unload` removes all of it and stops the worker."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from qgis.core import Qgis, QgsApplication, QgsMapLayerType, QgsRasterLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QFileDialog

try:  # Qt6 (QGIS 4) moved QAction to QtGui
    from qgis.PyQt.QtGui import QAction
except ImportError:  # Qt5 (QGIS 3)
    from qgis.PyQt.QtWidgets import QAction

from .core.backend import close_shared_backend
from .core.help import HELP_URL, open_help
from .core.result_layers import ResultError, add_result_layers, read_result
from .processing.provider import RsSegProvider
from .ui.messages import push

MENU = "&RS RefSeg"


class RsRefSegPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.actions: list[QAction] = []  # in the Raster menu
        self.toolbar_action: Optional[QAction] = None  # on the Plugins toolbar
        self.layer_action: Optional[QAction] = None
        self.dock = None
        self.provider: Optional[RsSegProvider] = None

    def initProcessing(self) -> None:  # noqa: N802 - QGIS API
        """The `rsseg` Processing provider (toolbox, batch, model builder, processing.run)."""
        if self.provider is None:
            self.provider = RsSegProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def unloadProcessing(self) -> None:  # noqa: N802
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    def initGui(self) -> None:  # noqa: N802 - QGIS API
        self.initProcessing()
        icon = QIcon(str(Path(__file__).with_name("icon.svg")))
        window = self.iface.mainWindow()
        show = QAction(icon, "Segment with text…", window)
        show.setToolTip("Open the RS RefSeg dock: segment a raster from a class list or a sentence")
        show.triggered.connect(lambda: self.show_dock())
        self.iface.addPluginToRasterMenu(MENU, show)
        self.iface.addToolBarIcon(show)  # the Plugins toolbar: the Raster toolbar is hidden in a fresh profile
        self.toolbar_action = show
        self.actions.append(show)
        load = QAction(icon, "Add segmentation result…", window)
        load.setToolTip("Load an rsseg result.json as styled mask and polygon layers")
        load.triggered.connect(self.add_result_dialog)
        self.iface.addPluginToRasterMenu(MENU, load)
        self.actions.append(load)
        help_action = QAction(QgsApplication.getThemeIcon("/mActionHelpContents.svg"), "Help", window)
        help_action.setToolTip(f"Open the plugin's documentation in the browser ({HELP_URL})")
        help_action.triggered.connect(lambda: self.open_help())
        self.iface.addPluginToRasterMenu(MENU, help_action)
        self.actions.append(help_action)
        self.layer_action = QAction(icon, "Segment this layer…", window)
        self.layer_action.triggered.connect(self.segment_active_layer)
        self.iface.addCustomActionForLayerType(self.layer_action, "", QgsMapLayerType.RasterLayer, True)

    def unload(self) -> None:
        self.unloadProcessing()
        if self.layer_action is not None:
            self.iface.removeCustomActionForLayerType(self.layer_action)
            self.layer_action.deleteLater()
            self.layer_action = None
        if self.toolbar_action is not None:
            self.iface.removeToolBarIcon(self.toolbar_action)
            self.toolbar_action = None
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            action.deleteLater()
        self.actions.clear()
        if self.dock is not None:
            self.dock.shutdown()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        close_shared_backend()

    # -- the dock ----------------------------------------------------------------------------------
    def show_dock(self, layer: Optional[QgsRasterLayer] = None):
        if self.dock is None:
            from .ui.dock import SegmentDock

            self.dock = SegmentDock(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        if layer is not None:
            self.dock.set_layer(layer)
        self.dock.show()
        self.dock.raise_()
        return self.dock

    def segment_active_layer(self) -> None:
        """The Layers panel's "Segment this layer...": the dock, set to the layer right-clicked."""
        layer = self.iface.activeLayer()
        self.show_dock(layer if isinstance(layer, QgsRasterLayer) else None)

    # -- help --------------------------------------------------------------------------------------
    def open_help(self) -> None:
        """The Raster menu's "Help": docs/plugin.md in the browser, or its address when none opens."""
        if not open_help():
            push(self.iface.messageBar(), f"could not open a browser; the documentation is at {HELP_URL}",
                 Qgis.MessageLevel.Warning)

    # -- results -----------------------------------------------------------------------------------
    def add_result_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.iface.mainWindow(), "Add segmentation result", "",
                                              "rsseg result (result.json);;JSON (*.json)")
        if path:
            self.add_result(path)

    def add_result(self, path: str) -> None:
        try:
            added = add_result_layers(read_result(path))
        except ResultError as exc:
            push(self.iface.messageBar(), str(exc), Qgis.MessageLevel.Critical)
            return
        push(self.iface.messageBar(), f"added “{added.group.name()}”", Qgis.MessageLevel.Success)
