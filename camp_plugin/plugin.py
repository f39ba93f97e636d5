"""The plugin object QGIS loads: toolbar, menu, the dock, and the Processing provider."""

from __future__ import annotations

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from . import resource_path

MENU = "&Camp Mapper"


class CampPlugin:
    def __init__(self, iface) -> None:  # noqa: ANN001 - QgisInterface
        self.iface = iface
        self.provider = None
        self.dock = None
        self.toolbar = None
        self.actions: list[QAction] = []

    # Processing: qgis_process calls initProcessing() alone; the GUI calls initGui().
    def initProcessing(self) -> None:  # noqa: N802
        if self.provider is None:
            from .provider import CampProvider

            self.provider = CampProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        main = self.iface.mainWindow()
        self.toolbar = self.iface.addToolBar("Camp Mapper")
        self.toolbar.setObjectName("CampMapperToolbar")
        for text, icon, tab in (("Train on map extent…", "train.svg", "train"),
                                ("Detect on map extent…", "detect.svg", "detect"),
                                ("Camp Mapper settings…", "settings.svg", "settings")):
            action = QAction(QIcon(str(resource_path("icons", icon))), text, main)
            action.setObjectName(f"campMapper_{tab}")
            action.triggered.connect(lambda _checked=False, t=tab: self.show_dock(t))
            self.iface.addPluginToRasterMenu(MENU, action)
            if tab != "settings":
                self.toolbar.addAction(action)
            self.actions.append(action)

    def show_dock(self, tab: str = "train") -> None:
        if self.dock is None:
            from .dock import CampDock

            self.dock = CampDock(self.iface, parent=self.iface.mainWindow())
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.dock.show_tab(tab)
        self.dock.show()
        self.dock.raise_()

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            action.deleteLater()
        self.actions = []
        if self.toolbar is not None:
            self.iface.mainWindow().removeToolBar(self.toolbar)
            self.toolbar.setParent(None)
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.dock is not None:
            self.dock.shutdown()
            self.iface.removeDockWidget(self.dock)
            self.dock.setParent(None)
            self.dock.deleteLater()
            self.dock = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
