"""The plugin's jobs end to end in real headless QGIS 3.22 on the real Kampala sample: Train from an
XYZ layer served on 127.0.0.1, Cancel, Detect into styled layers, a model that fails to load, and
``qgis_process run camp:detect`` from a fresh QGIS profile."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qgis, pytest.mark.sample_data, pytest.mark.slow]

pytest.importorskip("qgis.core")
from qgis.core import (  # noqa: E402
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QCoreApplication  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # camp_plugin is not pip-installed: import it from the checkout
    sys.path.insert(0, str(ROOT))
MERCATOR = QgsCoordinateReferenceSystem("EPSG:3857")
LONLAT = QgsCoordinateReferenceSystem("EPSG:4326")
# Debian's /usr/bin/qgis_process wrapper adds QGIS_OPTS from /etc/default/qgis ('--noversioncheck', meant
# for the desktop app), which qgis_process rejects; the binary it wraps takes the same arguments.
QGIS_PROCESS = shutil.which("qgis_process.bin") or shutil.which("qgis_process")


def wait_for(task, timeout: float = 300.0) -> None:
    """Spin the event loop until the task has run its finished() callback (the manager deletes it)."""
    done: list[bool] = []
    task.taskCompleted.connect(lambda: done.append(True))
    task.taskTerminated.connect(lambda: done.append(False))
    deadline = time.monotonic() + timeout
    while not done:
        QCoreApplication.processEvents()
        time.sleep(0.02)
        assert time.monotonic() < deadline, "task did not finish in time"


def subset_extent(kampala, columns: int, rows: int) -> QgsRectangle:
    """EPSG:3857 extent of the north-west columns x rows tiles of the sample (a hair inside)."""
    from trainer.tiling import Tile

    x0 = min(t.x for t in kampala.tiles)
    y0 = min(t.y for t in kampala.tiles)
    nw = Tile(x0, y0, kampala.zoom).bounds_3857
    se = Tile(x0 + columns - 1, y0 + rows - 1, kampala.zoom).bounds_3857
    eps = 0.01
    return QgsRectangle(nw[0] + eps, se[1] + eps, se[2] - eps, nw[3] - eps)


@pytest.fixture(scope="session")
def kampala_geotiff(kampala, tmp_path_factory) -> Path:
    """A real orthophoto: 6 x 4 Kampala tiles stitched into one RGB GeoTIFF in EPSG:3857."""
    import numpy as np
    import rasterio
    from PIL import Image

    from trainer.tiling import Tile

    x0 = min(t.x for t in kampala.tiles)
    y0 = min(t.y for t in kampala.tiles)
    columns, rows = 6, 4
    mosaic = np.zeros((3, rows * 256, columns * 256), dtype="uint8")
    for r in range(rows):
        for c in range(columns):
            tile = Image.open(kampala.tiles_dir / str(kampala.zoom) / str(x0 + c) / f"{y0 + r}.png").convert("RGB")
            mosaic[:, r * 256:(r + 1) * 256, c * 256:(c + 1) * 256] = np.asarray(tile).transpose(2, 0, 1)
    path = tmp_path_factory.mktemp("ortho") / "kampala_ortho.tif"
    with rasterio.open(path, "w", driver="GTiff", width=columns * 256, height=rows * 256, count=3, dtype="uint8",
                       crs="EPSG:3857", transform=Tile(x0, y0, kampala.zoom).transform(256)) as dst:
        dst.write(mosaic)
    return path


@pytest.fixture
def dock(qgis_app, qgis_iface, qgis_processing, qgis_new_project, tmp_path, monkeypatch):
    import camp_plugin
    from camp_plugin.settings import CampSettings

    monkeypatch.delenv("CAMP_PYTHON", raising=False)
    monkeypatch.delenv("CAMP_EXECUTION", raising=False)
    CampSettings(runs_dir=str(tmp_path / "runs")).save()
    plugin = camp_plugin.classFactory(qgis_iface)
    plugin.initGui()
    plugin.show_dock("train")
    qgis_iface.messageBar().clear_messages()
    yield plugin.dock
    plugin.unload()  # cancels what still runs; wait so no task outlives the test
    deadline = time.monotonic() + 120
    while QgsApplication.taskManager().countActiveTasks() and time.monotonic() < deadline:
        QCoreApplication.processEvents()
        time.sleep(0.05)
    CampSettings().save()


def xyz_layer(tile_server) -> QgsRasterLayer:
    layer = QgsRasterLayer(f"type=xyz&url={tile_server.template}&zmax=21&zmin=0", "kampala xyz", "wms")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def train_request(kampala, tile_server, out: Path, epochs: int):
    from camp_plugin.workflows import TrainRequest

    labels = QgsVectorLayer(str(kampala.labels), "osm buildings", "ogr")
    assert labels.isValid()
    QgsProject.instance().addMapLayer(labels)
    return TrainRequest(imagery=xyz_layer(tile_server), extent=subset_extent(kampala, 6, 4), extent_crs=MERCATOR,
                        out=out, zoom=kampala.zoom, labels=labels, epochs=epochs, batch_size=4,
                        base_channels=8, depth=2, accelerator="cpu")


def test_train_task_on_an_xyz_layer_runs_to_the_end(dock, qgis_iface, kampala, tile_server, tmp_path):
    from camp_plugin.settings import CampSettings

    dock.settings_python.setFilePath(sys.executable)  # train out of process, as in a QGIS without torch
    out = tmp_path / "project"
    request = train_request(kampala, tile_server, out, epochs=1)
    layers_before = set(QgsProject.instance().mapLayers())
    task = dock.start_train(request)
    assert task is not None, qgis_iface.messageBar().get_messages(Qgis.Critical)
    seen = []
    task.progressChanged.connect(seen.append)
    assert set(QgsProject.instance().mapLayers()) == layers_before  # nothing is added while it runs
    wait_for(task)
    assert set(QgsProject.instance().mapLayers()) == layers_before  # training adds no layers
    success = qgis_iface.messageBar().get_messages(Qgis.Success)
    assert success, qgis_iface.messageBar().get_messages(Qgis.Critical)
    assert "model trained" in success[-1] and "miou" in success[-1] and (out / "run").as_uri() in success[-1]
    assert tile_server.tile_requests > 0  # the imagery came from the XYZ server, through QGIS
    manifest = json.loads((out / "dataset" / "manifest.json").read_text())
    assert manifest  # the fetch step wrote a real dataset from the exported layer
    card = json.loads((out / "run" / "model_card.json").read_text())
    assert card["zoom"] == kampala.zoom and card["training"]["epochs"] >= 0
    assert (out / "run" / "best_model.onnx").stat().st_size > 10_000
    assert not (out / ".camp-work").exists()
    assert CampSettings.load().last_model == str(out / "run")
    assert max(seen) >= 99.0


def test_cancel_stops_training_and_leaves_no_complete_run(dock, qgis_iface, kampala, tile_server, tmp_path):
    dock.settings_python.setFilePath(sys.executable)  # out of process: Cancel interrupts the job's process
    out = tmp_path / "project"
    task = dock.start_train(train_request(kampala, tile_server, out, epochs=200))
    assert task is not None
    cancelled_at: list[str] = []

    def maybe_cancel(message: str) -> None:
        if message.startswith("train: epoch") and not cancelled_at:  # the network is training now
            cancelled_at.append(message)
            task.cancel()

    task.message.connect(maybe_cancel)
    started = time.monotonic()
    wait_for(task)
    assert cancelled_at and time.monotonic() - started < 240
    warnings = qgis_iface.messageBar().get_messages(Qgis.Warning)
    assert any("Training cancelled" in m for m in warnings)
    assert not qgis_iface.messageBar().get_messages(Qgis.Success)
    run = out / "run"
    assert not (run / "model_card.json").exists() and not (run / "best_model.onnx").exists()
    assert dock.train_panel.run_button.isEnabled()


def test_detect_task_adds_styled_layers_from_files(dock, qgis_iface, kampala_geotiff, trained_run, tmp_path):
    from camp_plugin.workflows import DetectRequest

    assert dock.current_settings().python == ""  # no separate Python: detect runs inside QGIS's Python
    ortho = QgsRasterLayer(str(kampala_geotiff), "orthophoto")
    QgsProject.instance().addMapLayer(ortho)
    out = tmp_path / "detections"
    before = set(QgsProject.instance().mapLayers())
    task = dock.start_detect(DetectRequest(model=str(trained_run), imagery=ortho, extent=ortho.extent(),
                                           extent_crs=ortho.crs(), out=out))
    assert task is not None, qgis_iface.messageBar().get_messages(Qgis.Critical)
    assert set(QgsProject.instance().mapLayers()) == before
    wait_for(task)
    success = qgis_iface.messageBar().get_messages(Qgis.Success)
    assert success, qgis_iface.messageBar().get_messages(Qgis.Critical)
    summary = json.loads((out / "summary.json").read_text())
    assert f"{summary['footprints']} footprint" in success[-1]
    group = QgsProject.instance().layerTreeRoot().findGroup("Camp detections: run on orthophoto")
    assert group is not None
    layers = {node.layer().name(): node.layer() for node in group.findLayers()}
    probability, footprints = layers["probability"], layers["footprints"]
    assert probability.isValid() and probability.providerType() == "gdal"
    assert Path(probability.source()) == out / "probability.tif"
    assert probability.renderer().type() == "singlebandpseudocolor"
    assert footprints.isValid() and footprints.providerType() == "ogr"
    assert footprints.source().split("|")[0] == str(out / "footprints.gpkg")
    assert footprints.featureCount() == summary["footprints"] > 0
    assert footprints.renderer().symbol().color().alpha() < 255  # the footprint style was applied


def test_detect_with_a_model_that_fails_to_load(dock, qgis_iface, kampala_geotiff, tmp_path):
    from camp_plugin.workflows import DetectRequest

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an ONNX model")
    ortho = QgsRasterLayer(str(kampala_geotiff), "orthophoto")
    QgsProject.instance().addMapLayer(ortho)
    before = set(QgsProject.instance().mapLayers())
    task = dock.start_detect(DetectRequest(model=str(broken), imagery=ortho, extent=ortho.extent(),
                                           extent_crs=ortho.crs(), out=tmp_path / "d"))
    assert task is not None
    wait_for(task)
    message = qgis_iface.messageBar().get_messages(Qgis.Critical)[-1]
    assert "Detection failed:" in message and "broken.onnx" in message
    assert "Traceback" not in message and "unexpected error" not in message
    assert set(QgsProject.instance().mapLayers()) == before
    assert not (tmp_path / "d" / "probability.tif").exists()


# ---------------------------------------------------------------- qgis_process, headless

@pytest.fixture
def qgis_profile(tmp_path) -> dict[str, str]:
    """A fresh QGIS profile with this checkout linked as a plugin and enabled; env for qgis_process."""
    if QGIS_PROCESS is None:
        pytest.skip("qgis_process is not installed (apt-get install qgis)")
    config = tmp_path / "qgis-config"
    profile = config / "profiles" / "default"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_plugin.py"), "--link",
                    str(profile / "python" / "plugins")], check=True, capture_output=True)
    (profile / "QGIS").mkdir(parents=True)
    (profile / "QGIS" / "QGIS3.ini").write_text("[PythonPlugins]\ncamp_plugin=true\n")
    env = {**os.environ, "QGIS_CUSTOM_CONFIG_PATH": str(config), "HOME": str(tmp_path / "home"),
           "QT_QPA_PLATFORM": "offscreen", "CAMP_PYTHON": str(Path(sys.executable))}
    env.pop("PYTHONPATH", None)
    return env


def test_qgis_process_lists_and_runs_detect(qgis_app, qgis_profile, kampala_geotiff, trained_run, tmp_path):
    listing = subprocess.run([QGIS_PROCESS, "list"], env=qgis_profile, capture_output=True, text=True, timeout=120)
    assert "camp:detect" in listing.stdout, listing.stdout[-2000:] + listing.stderr[-2000:]
    for algorithm in ("camp:fetch", "camp:train", "camp:evaluate"):
        assert algorithm in listing.stdout
    out = tmp_path / "headless"
    proc = subprocess.run([QGIS_PROCESS, "run", "camp:detect", "--",
                           f"MODEL={trained_run}", f"IMAGERY={kampala_geotiff}", f"OUTPUT_FOLDER={out}"],
                          env=qgis_profile, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "running camp detect in" in proc.stdout  # QGIS's system Python has no torch: out of process
    summary = json.loads((out / "summary.json").read_text())
    assert f"COUNT:\t{summary['footprints']}" in proc.stdout
    probability = QgsRasterLayer(str(out / "probability.tif"), "p")
    footprints = QgsVectorLayer(str(out / "footprints.gpkg"), "f", "ogr")
    assert probability.isValid() and footprints.isValid()
    assert probability.width() == 6 * 256 and probability.crs().authid() == "EPSG:3857"
    assert footprints.featureCount() == summary["footprints"] > 0


def test_processing_fetch_reads_an_xyz_layer_through_qgis(qgis_app, qgis_iface, qgis_processing, qgis_new_project,
                                                          kampala, tile_server, tmp_path, monkeypatch):
    """camp:fetch from the toolbox API: the XYZ layer is exported through QGIS onto the tile grid."""
    import processing

    import camp_plugin

    monkeypatch.delenv("CAMP_PYTHON", raising=False)
    plugin = camp_plugin.classFactory(qgis_iface)
    plugin.initProcessing()
    try:
        extent = subset_extent(kampala, 6, 4)
        out = tmp_path / "dataset"
        result = processing.run("camp:fetch", {
            "EXTENT": f"{extent.xMinimum()},{extent.xMaximum()},{extent.yMinimum()},{extent.yMaximum()} [EPSG:3857]",
            "IMAGERY": xyz_layer(tile_server), "ZOOM": kampala.zoom, "LABELS": str(kampala.labels),
            "OUTPUT_FOLDER": str(out)})
    finally:
        plugin.unload()
    assert result["CHIPS"] == 24 and result["OUTPUT_FOLDER"] == str(out)
    assert tile_server.tile_requests >= 24
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(list((out / "chips").glob("*.tif"))) == 24
    assert manifest
