"""The QGIS plugin in real headless QGIS 3.22: load/unload, the Processing provider, the dock's
validation messages, settings, and the release zip loading from a fresh profile folder."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.qgis

qgis_core = pytest.importorskip("qgis.core")
from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QCoreApplication, QEvent  # noqa: E402
from qgis.PyQt.QtWidgets import QAction, QDockWidget, QToolBar  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # camp_plugin is not pip-installed: import it from the checkout
    sys.path.insert(0, str(ROOT))
MERCATOR = QgsCoordinateReferenceSystem("EPSG:3857")


def _flush_deletes() -> None:
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    QCoreApplication.processEvents()


def _gui_state(iface) -> dict:
    main = iface.mainWindow()
    return {
        "actions": sorted(a.objectName() for a in main.findChildren(QAction) if a.objectName()),
        "toolbars": sorted(t.objectName() for t in main.findChildren(QToolBar)),
        "docks": sorted(d.objectName() for d in main.findChildren(QDockWidget)),
        "providers": sorted(p.id() for p in QgsApplication.processingRegistry().providers()),
    }


@pytest.fixture
def plugin(qgis_app, qgis_iface, qgis_processing, qgis_new_project):
    import camp_plugin

    instance = camp_plugin.classFactory(qgis_iface)
    instance.initGui()
    yield instance
    instance.unload()
    _flush_deletes()


@pytest.fixture
def dock(plugin):
    plugin.show_dock("train")
    return plugin.dock


def test_plugin_loads_and_unloads_without_leftovers(qgis_app, qgis_iface, qgis_processing, qgis_new_project):
    import camp_plugin

    before = _gui_state(qgis_iface)
    instance = camp_plugin.classFactory(qgis_iface)
    instance.initGui()
    instance.show_dock("detect")
    during = _gui_state(qgis_iface)
    assert "camp" in during["providers"] and "camp" not in before["providers"]
    assert {"campMapper_train", "campMapper_detect", "campMapper_settings"} <= set(during["actions"])
    assert "CampMapperToolbar" in during["toolbars"]
    assert "CampMapperDock" in during["docks"]
    assert instance.dock.tabs.currentIndex() == 1
    instance.unload()
    _flush_deletes()
    assert _gui_state(qgis_iface) == before


def test_provider_registers_the_four_algorithms(plugin):
    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("camp")
    assert provider is not None
    assert sorted(a.id() for a in provider.algorithms()) == ["camp:detect", "camp:evaluate", "camp:fetch", "camp:train"]
    detect = registry.algorithmById("camp:detect")
    names = [p.name() for p in detect.parameterDefinitions()]
    assert names[:3] == ["MODEL", "IMAGERY", "EXTENT"] and "OUTPUT_FOLDER" in names
    outputs = {o.name(): o.type() for o in detect.outputDefinitions()}
    assert outputs["PROBABILITY"] == "outputRaster" and outputs["FOOTPRINTS"] == "outputVector"
    assert outputs["OUTPUT_FOLDER"] == "outputFolder"


def _local_raster(tmp_path: Path, bounds=(0.0, 0.0, 100.0, 100.0)) -> QgsRasterLayer:
    """A generated 3-band GeoTIFF in EPSG:3857 (for validation tests only; no accuracy claims)."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_bounds

    path = tmp_path / "generated_rgb.tif"
    with rasterio.open(path, "w", driver="GTiff", width=50, height=50, count=3, dtype="uint8", crs="EPSG:3857",
                       transform=from_bounds(*bounds, 50, 50)) as dst:
        dst.write(np.full((3, 50, 50), 120, dtype="uint8"))
    layer = QgsRasterLayer(str(path), "generated")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_train_without_imagery_layer_shows_a_message(dock, qgis_iface, tmp_path):
    from camp_plugin import workflows

    request = workflows.TrainRequest(imagery=None, extent=QgsRectangle(0, 0, 100, 100), extent_crs=MERCATOR,
                                     out=tmp_path / "t")
    assert dock.start_train(request) is None
    errors = qgis_iface.messageBar().get_messages(qgis_core.Qgis.Critical)
    assert any("no imagery layer" in m and "raster layer" in m for m in errors)
    assert "no imagery layer" in dock.train_panel.status.text()
    assert not (tmp_path / "t").exists()


def test_extent_without_overlap_names_the_layer(dock, qgis_iface, tmp_path):
    from camp_plugin import workflows

    layer = _local_raster(tmp_path)
    far = QgsRectangle(5000, 5000, 6000, 6000)
    request = workflows.DetectRequest(model=str(tmp_path), imagery=layer, extent=far, extent_crs=MERCATOR,
                                      out=tmp_path / "d")
    (tmp_path / "model_card.json").write_text('{"resolution_m": 1.0}')
    assert dock.start_detect(request) is None
    message = qgis_iface.messageBar().get_messages(qgis_core.Qgis.Critical)[-1]
    assert "does not overlap the imagery layer 'generated'" in message


@pytest.mark.parametrize("model, expected", [
    ("", "no model"),
    ("last", "no model has been trained"),
    ("/nonexistent/model.onnx", "does not exist"),
    ("notes.txt", "not a model this plugin can run"),
    (".", "not a camp run folder"),
])
def test_bad_model_choices_are_explained(tmp_path, qgis_app, model, expected):
    from camp_plugin.workflows import resolve_model
    from trainer.errors import InputError, ModelLoadError

    if model == "notes.txt":
        model = str(tmp_path / "notes.txt")
        Path(model).write_text("x")
    elif model == ".":
        model = str(tmp_path)
    with pytest.raises((ModelLoadError, InputError), match=expected):
        resolve_model(model)


def test_labels_layer_must_be_polygons(qgis_app, tmp_path):
    from camp_plugin.workflows import export_labels
    from trainer.errors import InputError

    points = QgsVectorLayer("Point?crs=EPSG:4326", "wells", "memory")
    with pytest.raises(InputError, match="'wells' has Point geometries; training needs polygons"):
        export_labels(points, QgsRectangle(0, 0, 1, 1), QgsCoordinateReferenceSystem("EPSG:4326"),
                      tmp_path / "l.geojson")


def test_runner_choice_and_its_messages(qgis_app, monkeypatch):
    from camp_plugin import execution
    from camp_plugin.settings import CampSettings
    from trainer.errors import DependencyError

    monkeypatch.setattr(execution, "missing_in_process_modules", lambda: ["torch"])
    with pytest.raises(DependencyError, match="QGIS's Python lacks torch.*set 'Python for jobs'"):
        execution.resolve_runner(CampSettings(execution="auto"))
    with pytest.raises(DependencyError, match="none is configured"):
        execution.resolve_runner(CampSettings(execution="subprocess"))
    with pytest.raises(DependencyError, match="lacks torch"):
        execution.resolve_runner(CampSettings(execution="in_process", python="/opt/venv/bin/python"))
    runner = execution.resolve_runner(CampSettings(python="/opt/venv/bin/python"))
    assert runner.python == "/opt/venv/bin/python" and not runner.in_process
    monkeypatch.setattr(execution, "missing_in_process_modules", lambda: [])
    assert execution.resolve_runner(CampSettings(execution="auto")).in_process
    assert execution.resolve_runner(CampSettings(execution="in_process", python="/opt/p")).in_process


def test_check_environment_of_a_python_without_torch(qgis_app):
    """QGIS's system Python has no torch: the report says so and gives the pip command for it."""
    from camp_plugin.execution import check_interpreter
    from trainer.environment import EnvironmentReport

    if subprocess.run(["/usr/bin/python3", "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip("/usr/bin/python3 has torch here")
    report = EnvironmentReport.from_dict(check_interpreter("/usr/bin/python3"))
    assert not report.ok and report.torch is None
    assert report.fix_command.startswith('"/usr/bin/python3" -m pip install "torch==2.13.0"')
    assert "Fix:" in report.summary()


def test_settings_round_trip_and_env_override(qgis_app, monkeypatch):
    from camp_plugin.settings import CampSettings

    CampSettings(python="/x/python", execution="subprocess", runs_dir="/tmp/runs", last_model="/tmp/r").save()
    loaded = CampSettings.load()
    assert (loaded.python, loaded.execution, loaded.runs_path, loaded.last_model) == (
        "/x/python", "subprocess", Path("/tmp/runs"), "/tmp/r")
    monkeypatch.setenv("CAMP_PYTHON", "/y/python")
    assert CampSettings.load().python == "/y/python"
    CampSettings().save()


# ---------------------------------------------------------------- the release zip

def test_zip_installs_into_a_profile_and_uses_its_bundled_core(tmp_path):
    out = tmp_path / "dist"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_plugin.py"), "--out", str(out)], check=True)
    archive = out / "camp_plugin.zip"
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
    assert all(n.startswith("camp_plugin/") for n in names)
    for required in ("camp_plugin/metadata.txt", "camp_plugin/__init__.py", "camp_plugin/trainer/jobs.py",
                     "camp_plugin/resources/styles/probability.qml", "camp_plugin/resources/icons/camp.svg"):
        assert required in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/tests/" in n]

    plugins = tmp_path / "profile" / "python" / "plugins"
    plugins.mkdir(parents=True)
    zipfile.ZipFile(archive).extractall(plugins)
    script = f"""
import sys, os
sys.path.insert(0, {str(plugins)!r})
from qgis.core import QgsApplication
app = QgsApplication([], False); app.initQgis()
from qgis.PyQt.QtWidgets import QMainWindow
from qgis.gui import QgsMapCanvas, QgsMessageBar
import qgis.utils

class Iface:  # the part of QgisInterface the plugin uses, over a real main window
    def __init__(self):
        self.main = QMainWindow(); self.canvas = QgsMapCanvas(self.main); self.bar = QgsMessageBar()
    def mainWindow(self): return self.main
    def mapCanvas(self): return self.canvas
    def messageBar(self): return self.bar
    def addToolBar(self, name): return self.main.addToolBar(name)
    def addDockWidget(self, area, dock): self.main.addDockWidget(area, dock)
    def removeDockWidget(self, dock): self.main.removeDockWidget(dock)
    def addPluginToRasterMenu(self, menu, action): pass
    def removePluginRasterMenu(self, menu, action): pass

qgis.utils.iface = Iface()
qgis.utils.plugin_paths = [{str(plugins)!r}]
qgis.utils.updateAvailablePlugins()
assert "camp_plugin" in qgis.utils.available_plugins, qgis.utils.available_plugins
assert qgis.utils.pluginMetadata("camp_plugin", "hasProcessingProvider") == "yes"
assert qgis.utils.loadPlugin("camp_plugin") and qgis.utils.startPlugin("camp_plugin")
import trainer, camp_plugin
assert trainer.__file__.startswith({str(plugins)!r}), trainer.__file__
print("version", trainer.__version__)
assert QgsApplication.processingRegistry().providerById("camp") is not None
qgis.utils.plugins["camp_plugin"].show_dock("settings")
assert qgis.utils.unloadPlugin("camp_plugin")
assert QgsApplication.processingRegistry().providerById("camp") is None
print("OK")
os._exit(0)
"""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path / "home")}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr
    metadata = (ROOT / "metadata.txt").read_text()
    version = next(line.split("=", 1)[1] for line in metadata.splitlines() if line.startswith("version="))
    assert f"version {version}" in proc.stdout
