"""Screenshot of the Camp Mapper dock beside a map canvas, for docs/img/dock.png.

    python scripts/screenshot_dock.py [--tiles ../shared/data/kampala/tiles] [--detections FOLDER]
        [--tab train|detect|settings] [--out docs/img/dock.png]

Starts Xvfb (a real X server, so widgets render as on a desktop) unless DISPLAY is set, shows
the dock in a main window with the tiles as an XYZ layer (and, if given, a detect output folder
as the styled layer group), and saves the window with QWidget.grab().
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_xvfb(display: str = ":99") -> subprocess.Popen | None:
    if os.environ.get("DISPLAY"):
        return None
    if shutil.which("Xvfb") is None:
        raise SystemExit("Xvfb is not installed (apt-get install xvfb), and DISPLAY is not set")
    server = subprocess.Popen(["Xvfb", display, "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    os.environ["DISPLAY"] = display
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=Path, default=ROOT.parent / "shared" / "data" / "kampala" / "tiles")
    parser.add_argument("--detections", type=Path, help="a camp detect output folder to show on the map")
    parser.add_argument("--tab", default="train", choices=["train", "detect", "settings"])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "dock.png")
    args = parser.parse_args()
    server = start_xvfb()
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    sys.path.insert(0, str(ROOT))
    try:
        return _shoot(args)
    finally:
        if server is not None:
            server.terminate()


def _shoot(args: argparse.Namespace) -> int:
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
    from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsMapCanvas, QgsMessageBar
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QMainWindow, QVBoxLayout, QWidget

    app = QgsApplication([], True)
    app.initQgis()
    import camp_plugin

    camp_plugin.ensure_trainer_importable()
    from camp_plugin.dock import CampDock
    from camp_plugin.results import load_detection

    window = QMainWindow()
    window.setWindowTitle("Camp Mapper")
    canvas = QgsMapCanvas()
    bar = QgsMessageBar()
    central = QWidget()
    layout = QVBoxLayout(central)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(bar)
    layout.addWidget(canvas)
    window.setCentralWidget(central)
    project = QgsProject.instance()
    bridge = QgsLayerTreeMapCanvasBridge(project.layerTreeRoot(), canvas)  # noqa: F841 - keeps the canvas in sync
    template = args.tiles.resolve().as_uri() + "/{z}/{x}/{y}.png"
    imagery = QgsRasterLayer(f"type=xyz&url={template}&zmax=21&zmin=0", "Kampala (OpenAerialMap, z21)", "wms")
    if not imagery.isValid():
        raise SystemExit(f"cannot open the tiles at {args.tiles}")
    project.addMapLayer(imagery)
    canvas.setDestinationCrs(imagery.crs())
    if args.detections:
        load_detection(args.detections, "model on Kampala")

    class Iface:  # what the dock needs of QGIS's interface
        def mapCanvas(self):  # noqa: N802
            return canvas

        def messageBar(self):  # noqa: N802
            return bar

    dock = CampDock(Iface(), parent=window)
    window.addDockWidget(Qt.RightDockWidgetArea, dock)
    window.resize(1500, 900)
    window.resizeDocks([dock], [660], Qt.Horizontal)
    window.show()
    extent = imagery.extent() if not args.detections else load_extent(args.detections)
    for _ in range(20):  # the layer tree bridge sets its own extent on the first layer: override it after
        app.processEvents()
        time.sleep(0.02)
    canvas.setExtent(extent)
    canvas.refresh()
    dock.train_labels.setLayer(None)
    dock.train_imagery.setLayer(imagery)
    dock.detect_imagery.setLayer(imagery)
    dock.show_tab(args.tab)
    for box in (dock.train_extent, dock.detect_extent):
        box.setOutputExtentFromUser(canvas.extent(), canvas.mapSettings().destinationCrs())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # let the canvas fetch and draw every tile
        app.processEvents()
        if not canvas.isDrawing() and time.monotonic() > deadline - 16:
            break
        time.sleep(0.05)
    canvas.refresh()
    canvas.waitWhileRendering()
    app.processEvents()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(args.out))
    print(f"saved {args.out}")
    return 0


def load_extent(folder: Path):  # noqa: ANN201 - a QgsRectangle
    from qgis.core import QgsRasterLayer

    return QgsRasterLayer(str(folder / "probability.tif"), "extent").extent()


if __name__ == "__main__":
    sys.exit(main())
