"""The ArcGIS Pro toolbox (esri_toolbox/CampDetection.pyt) loaded the way ArcGIS loads it.

arcpy only exists inside ArcGIS Pro, so tests/arcpy_stub stands in for it (injected into
sys.modules per test). Everything else is real: the .pyt is loaded from its file with
SourceFileLoader, validation runs in ArcGIS's order, and execute runs the real core on the real
Kampala sample, in process and in a configured Python (CAMP_PYTHON) through trainer.runner.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYT = ROOT / "esri_toolbox" / "CampDetection.pyt"
STUB = Path(__file__).resolve().parent / "arcpy_stub"
TOOLS = {"fetch": "FetchTrainingChips", "train": "TrainCampDetector", "detect": "DetectCamps",
         "package": "ExportDeepLearningPackage"}


def load_pyt():
    """What ArcGIS does with a .pyt: execute it as a module named after the file."""
    loader = importlib.machinery.SourceFileLoader("CampDetection", str(PYT))
    spec = importlib.util.spec_from_loader("CampDetection", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture
def arcpy(monkeypatch, tmp_path):
    """A fresh arcpy stand-in in sys.modules, and toolbox settings isolated from the user's."""
    for name in [m for m in sys.modules if m == "arcpy" or m.startswith("arcpy.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(STUB))
    module = importlib.import_module("arcpy")
    for var in ("CAMP_PYTHON", "CAMP_EXECUTION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("APPDATA", str(tmp_path / "appdata"))
    yield module
    for name in [m for m in sys.modules if m == "arcpy" or m.startswith("arcpy.")]:
        sys.modules.pop(name, None)


@pytest.fixture
def toolbox(arcpy):
    return load_pyt()


def tool_and_params(toolbox, kind):
    tool = getattr(toolbox, TOOLS[kind])()
    return tool, tool.getParameterInfo()


def param(params, name):
    return next(p for p in params if p.name == name)


def fill(arcpy, params, **values):
    for name, value in values.items():
        arcpy.user_sets(params, name, value)


def kampala_extent(arcpy, kampala, crs=3857):
    """The Kampala block's extent as the map would give it (Web Mercator by default)."""
    extent = arcpy.Extent(*kampala.bbox, spatial_reference=arcpy.SpatialReference(4326))
    return extent if crs == 4326 else extent.projectAs(arcpy.SpatialReference(crs))


def positions(arcpy):
    return [args[0] for name, args in arcpy.calls if name == "SetProgressorPosition"]


@pytest.fixture(scope="module")
def mosaic(kampala, tmp_path_factory) -> Path:
    from test_detect_support import kampala_mosaic

    return kampala_mosaic(kampala, tmp_path_factory.mktemp("toolbox-mosaic") / "kampala.tif")


# ---------------------------------------------------------------- loading and parameters

def test_pyt_loads_in_a_python_without_torch_or_an_installed_core(tmp_path):
    """ArcGIS's Python has neither torch nor our package: the .pyt still loads and lists its tools."""
    code = f"""
import importlib.machinery, importlib.util, sys
sys.path.insert(0, {str(STUB)!r})
loader = importlib.machinery.SourceFileLoader("CampDetection", {str(PYT)!r})
spec = importlib.util.spec_from_loader("CampDetection", loader)
m = importlib.util.module_from_spec(spec); loader.exec_module(m)
tb = m.Toolbox()
print(tb.alias, [len(t().getParameterInfo()) for t in tb.tools])
import trainer
heavy = sorted(n for n in ("torch", "lightning", "rasterio", "numpy", "mlflow") if n in sys.modules)
print(trainer.__file__, heavy)
"""
    # -S: no site-packages at all (no torch, no numpy, no installed camp-trainer), run from elsewhere.
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": os.environ.get("PATH", "")}, timeout=120)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.strip().splitlines()
    assert first.startswith("camp [")
    assert second == f"{ROOT / 'trainer' / '__init__.py'} []"


def test_toolbox_lists_four_tools(toolbox):
    tb = toolbox.Toolbox()
    assert tb.alias == "camp" and tb.label
    labels = [t().label for t in tb.tools]
    assert labels == ["Fetch Training Chips", "Train Camp Detector", "Detect Camps", "Export Deep Learning Package"]
    for tool_cls in tb.tools:
        params = tool_cls().getParameterInfo()
        names = [p.name for p in params]
        assert len(names) == len(set(names))
        assert all(n == n.lower() and n.isidentifier() for n in names)
        assert all(p.displayName for p in params)


def test_parameter_types_directions_defaults_and_filters(toolbox):
    from trainer.config import DetectConfig, FetchConfig, TrainConfig

    defaults = {cls: {f.name: f.default for f in dataclasses.fields(cls)}
                for cls in (FetchConfig, TrainConfig, DetectConfig)}

    _, fetch = tool_and_params(toolbox, "fetch")
    assert param(fetch, "extent").datatype == "GPExtent" and param(fetch, "extent").parameterType == "Optional"
    assert param(fetch, "imagery").datatype == ["GPRasterLayer", "DERasterDataset"]
    assert param(fetch, "imagery_url").datatype == "GPString"
    zoom = param(fetch, "zoom")
    assert (zoom.datatype, zoom.value, zoom.filter.type, zoom.filter.list) == ("GPLong", 19, "Range", [0, 24])
    labels = param(fetch, "labels")
    assert (labels.datatype, labels.parameterType) == ("GPFeatureLayer", "Optional")
    out = param(fetch, "output_folder")
    assert (out.datatype, out.direction, out.parameterType) == ("DEFolder", "Output", "Required")
    assert param(fetch, "output_format").filter.list == ["geotiff", "esri"]
    for name in ("osm_filter", "overpass_url", "max_tiles", "output_format"):
        assert param(fetch, name).value == defaults[FetchConfig][name]
    chips = param(fetch, "chips")
    assert (chips.datatype, chips.parameterType, chips.direction) == ("GPLong", "Derived", "Output")

    _, train = tool_and_params(toolbox, "train")
    assert param(train, "dataset").datatype == "DEFolder" and param(train, "dataset").direction == "Input"
    assert param(train, "learning_rate").datatype == "GPDouble"
    assert param(train, "learning_rate").value == defaults[TrainConfig]["lr"]
    for name in ("epochs", "batch_size", "base_channels", "depth", "loss", "split", "val_fraction", "seed"):
        assert param(train, name).value == defaults[TrainConfig][name], name
    assert param(train, "device").filter.list == ["auto", "cpu", "gpu"]
    assert param(train, "augment").datatype == "GPBoolean" and param(train, "augment").value is True
    assert (param(train, "model").datatype, param(train, "model").parameterType) == ("DEFile", "Derived")

    _, detect = tool_and_params(toolbox, "detect")
    model = param(detect, "model")
    assert (model.datatype, model.filter.type, model.filter.list) == ("DEFile", "File", ["dlpk", "onnx", "pt"])
    assert param(detect, "threshold").value is None and param(detect, "threshold").filter.list == [0.0, 1.0]
    assert param(detect, "min_area").value == defaults[DetectConfig]["min_area_m2"]
    assert param(detect, "probability").datatype == "DERasterDataset"
    assert param(detect, "footprints").datatype == "DEFeatureClass"
    assert all(param(detect, n).parameterType == "Derived" for n in ("probability", "mask", "footprints", "count"))

    _, export = tool_and_params(toolbox, "package")
    formats = param(export, "formats")
    assert formats.multiValue and formats.value == ["dlpk"] and set(formats.filter.list) == {
        "dlpk", "onnx", "pt", "pth", "stac"}


@pytest.mark.qgis
def test_parameter_names_mirror_the_processing_algorithms(toolbox, qgis_app):
    """Same names (case aside) and order as the QGIS Processing algorithms of the same job."""
    algorithms = pytest.importorskip("camp_plugin.algorithms")
    compared = 0
    for alg_cls in algorithms.ALGORITHMS:
        alg = alg_cls()
        if alg.name() not in TOOLS:
            continue  # camp:evaluate has no ArcGIS tool
        alg.initAlgorithm()
        qgis_params = [d.name().lower() for d in alg.parameterDefinitions()]
        qgis_outputs = {d.name().lower() for d in alg.outputDefinitions()}
        _, params = tool_and_params(toolbox, alg.name())
        pyt = [p.name for p in params]
        missing = (set(qgis_params) | qgis_outputs) - set(pyt)
        assert not missing, f"{TOOLS[alg.name()]} lacks {sorted(missing)} of camp:{alg.name()}"
        shared = [n for n in pyt if n in qgis_params]
        assert shared == qgis_params, f"{TOOLS[alg.name()]}: order {shared} differs from QGIS {qgis_params}"
        compared += 1
    assert compared == 3


# ---------------------------------------------------------------- validation

def test_fetch_validation_messages(toolbox, arcpy, kampala, tile_server, tmp_path):
    tool, params = tool_and_params(toolbox, "fetch")
    errors = arcpy.validate(tool, params)
    assert "give Imagery" in errors["imagery"]
    assert "Value is required" in errors["output_folder"]

    url = tile_server.url + "/{z}/{x}/{y}.png"
    fill(arcpy, params, imagery_url=url, zoom=21, output_folder=str(tmp_path / "ds"))
    assert "Extent is required for a tile URL" in arcpy.validate(tool, params)["extent"]

    fill(arcpy, params, extent=kampala_extent(arcpy, kampala))
    assert arcpy.validate(tool, params) == {}

    # Too large for zoom 21: the message gives the tile count (computed here independently).
    import mercantile

    big = arcpy.Extent(32.55, 0.30, 32.65, 0.40, spatial_reference=arcpy.SpatialReference(4326))
    fill(arcpy, params, extent=big.projectAs(arcpy.SpatialReference(3857)))
    nw, se = mercantile.tile(32.55, 0.40, 21), mercantile.tile(32.65, 0.30, 21)
    count = (se.x - nw.x + 1) * (se.y - nw.y + 1)
    message = arcpy.validate(tool, params)["extent"]
    assert f"needs {count} tiles at zoom 21" in message and "cap of 5000" in message
    fill(arcpy, params, zoom=15)
    assert arcpy.validate(tool, params) == {}

    fill(arcpy, params, extent=arcpy.Extent(32.60, 0.35, 32.59, 0.36, spatial_reference=arcpy.SpatialReference(4326)))
    assert "inverted" in arcpy.validate(tool, params)["extent"]
    fill(arcpy, params, extent=arcpy.Extent(3628000.0, 38000.0, 3629000.0, 39000.0))  # typed, no coordinate system
    assert "no coordinate system" in arcpy.validate(tool, params)["extent"]

    fill(arcpy, params, imagery_url="tiles.example.org/z/x/y.png")
    assert "not a URL template" in arcpy.validate(tool, params)["imagery_url"]


def test_fetch_labels_layer_switches_osm_options_off(toolbox, arcpy, kampala):
    tool, params = tool_and_params(toolbox, "fetch")
    arcpy.validate(tool, params)
    assert param(params, "osm_filter").enabled
    fill(arcpy, params, labels=str(kampala.labels))
    arcpy.validate(tool, params)
    assert not param(params, "osm_filter").enabled and not param(params, "overpass_url").enabled


def test_existing_output_folder_needs_overwrite_or_resume(toolbox, arcpy, kampala, tile_server, tmp_path):
    tool, params = tool_and_params(toolbox, "fetch")
    out = tmp_path / "ds"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    fill(arcpy, params, imagery_url=tile_server.url + "/{z}/{x}/{y}.png", zoom=21,
         extent=kampala_extent(arcpy, kampala), output_folder=str(out))
    message = arcpy.validate(tool, params)["output_folder"]
    assert str(out) in message and "Overwrite an existing dataset" in message and "Resume" in message
    fill(arcpy, params, resume=True)
    assert arcpy.validate(tool, params) == {}
    fill(arcpy, params, overwrite=True)
    assert "either overwrite or resume" in arcpy.validate(tool, params)["overwrite"]


def test_detect_validation_of_model_and_imagery(toolbox, arcpy, mosaic, tmp_path):
    import numpy as np
    import rasterio

    tool, params = tool_and_params(toolbox, "detect")
    wrong = tmp_path / "weights.h5"
    wrong.write_bytes(b"\x89HDF")
    fill(arcpy, params, model=str(wrong), imagery=str(mosaic), output_folder=str(tmp_path / "out"))
    assert "wrong file type .h5" in arcpy.validate(tool, params)["model"]

    broken = tmp_path / "broken.dlpk"
    broken.write_text("not a zip")
    fill(arcpy, params, model=str(broken))
    assert "not a valid deep learning package" in arcpy.validate(tool, params)["model"]

    gray = tmp_path / "gray.tif"
    with rasterio.open(gray, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:3857",
                       transform=rasterio.transform.from_origin(0, 64, 1, 1)) as dst:
        dst.write(np.zeros((1, 64, 64), np.uint8))
    fill(arcpy, params, imagery=str(gray))
    assert "has 1 band(s); the model needs 3" in arcpy.validate(tool, params)["imagery"]

    fill(arcpy, params, imagery=None, imagery_url="http://127.0.0.1:9/{z}/{x}/{y}.png")
    assert "Extent is required" in arcpy.validate(tool, params)["extent"]


def test_train_validation_uses_the_core_rules_and_checks_the_gpu(toolbox, arcpy, tmp_path, monkeypatch):
    data = tmp_path / "dataset"
    data.mkdir()
    tool, params = tool_and_params(toolbox, "train")
    fill(arcpy, params, dataset=str(data), output_folder=str(tmp_path / "run"))
    assert arcpy.validate(tool, params) == {}

    fill(arcpy, params, val_fraction=0.5, test_fraction=0.45)
    assert "at least 10% of chips for training" in arcpy.validate(tool, params)["val_fraction"]
    fill(arcpy, params, val_fraction=0.15, test_fraction=0.15)

    # GPU requested: asked of the configured environment (here a CPU-only torch), out of process.
    monkeypatch.setenv("CAMP_PYTHON", sys.executable)
    monkeypatch.setenv("CAMP_EXECUTION", "subprocess")
    fill(arcpy, params, device="gpu")
    import torch

    message = arcpy.validate(tool, params).get("device", "")
    if torch.cuda.is_available():
        assert message == ""
    else:
        assert "has no usable CUDA GPU" in message and sys.executable in message and "'cpu'" in message


def test_settings_errors_say_what_to_set(toolbox, arcpy, monkeypatch, tmp_path):
    from camp_tools.settings import SettingsError, load_settings, plan_execution

    monkeypatch.setenv("CAMP_EXECUTION", "subprocess")
    with pytest.raises(SettingsError, match="set CAMP_PYTHON"):
        plan_execution()
    monkeypatch.delenv("CAMP_EXECUTION")
    settings_file = Path(os.environ["APPDATA"]) / "camp-mapper" / "settings.json"
    settings_file.parent.mkdir(parents=True)
    settings_file.write_text(json.dumps({"python": str(tmp_path / "nope" / "python.exe"), "execution": "subprocess"}))
    assert load_settings().source == str(settings_file)
    with pytest.raises(SettingsError, match="does not exist"):
        plan_execution()
    settings_file.write_text(json.dumps({"python": sys.executable, "execution": "subprocess"}))
    plan = plan_execution()
    assert not plan.in_process and plan.python == sys.executable
    settings_file.write_text(json.dumps({"execution": "auto"}))
    assert plan_execution().in_process  # this Python has every job package


# ---------------------------------------------------------------- execute, end to end

def test_fetch_executes_with_a_geopackage_layer_and_the_map_extent(toolbox, arcpy, kampala, tile_server, tmp_path):
    import pyogrio
    import rasterio

    # The labels layer is a table in a GeoPackage, as ArcGIS addresses it: exported for the core.
    gpkg = tmp_path / "reference.gpkg"
    meta, _, geometry, fields = pyogrio.raw.read(kampala.labels)
    pyogrio.raw.write(gpkg, geometry, fields, fields=meta["fields"], crs=meta["crs"], layer="buildings",
                      geometry_type=meta["geometry_type"], driver="GPKG")
    arcpy.env.extent = kampala_extent(arcpy, kampala)  # the map's extent, in Web Mercator
    tool, params = tool_and_params(toolbox, "fetch")
    out = tmp_path / "dataset"
    fill(arcpy, params, imagery_url=tile_server.url + "/{z}/{x}/{y}.png", zoom=21,
         labels=f"{gpkg}/main.buildings", output_folder=str(out))
    assert arcpy.validate(tool, params) == {}
    messages = arcpy.Messages()
    tool.execute(params, messages)

    assert param(params, "chips").value == len(kampala.tiles) == len(list((out / "chips").glob("*.tif")))
    assert [name for name, _ in arcpy.calls if name == "ExportFeatures"] == ["ExportFeatures"]
    labelled = 0
    for path in sorted((out / "labels").glob("*.tif")):
        with rasterio.open(path) as src:
            labelled += int(src.read(1).any())
            assert src.crs.to_epsg() == 3857
    assert labelled > len(kampala.tiles) // 2  # the 108 buildings cover most of the block
    assert any("running in ArcGIS's Python" in m for m in messages.of("message"))
    steps = positions(arcpy)
    assert steps and steps == sorted(steps) and steps[-1] == 100
    assert arcpy.calls[-1][0] == "ResetProgressor"
    assert arcpy.env.autoCancelling is True  # restored after the job


def test_train_executes_in_the_configured_python(toolbox, arcpy, kampala_dataset, tmp_path, monkeypatch):
    """A tiny model (1 epoch, width 8) trained through CAMP_PYTHON: progress streams into the tool."""
    monkeypatch.setenv("CAMP_PYTHON", sys.executable)
    monkeypatch.setenv("CAMP_EXECUTION", "subprocess")
    tool, params = tool_and_params(toolbox, "train")
    run = tmp_path / "runs" / "tiny"
    fill(arcpy, params, dataset=str(kampala_dataset), output_folder=str(run), epochs=1, base_channels=8, depth=2,
         batch_size=8, device="cpu", devices="1")
    assert arcpy.validate(tool, params) == {}
    messages = arcpy.Messages()
    tool.execute(params, messages)

    dlpk = Path(param(params, "model").value)
    assert dlpk == run / "best_model.dlpk" and zipfile.is_zipfile(dlpk)
    with zipfile.ZipFile(dlpk) as z:
        assert any(n.endswith(".emd") for n in z.namelist())
    assert 0.0 <= param(params, "miou").value <= 1.0
    assert (tmp_path / "runs" / "mlflow.db").is_file()  # the QGIS algorithm's default store
    assert any(f"in the Python environment {sys.executable}" in m for m in messages.of("message"))
    assert len(set(positions(arcpy))) >= 3 and positions(arcpy)[-1] == 100
    labels = [args[0] for name, args in arcpy.calls if name == "SetProgressorLabel"]
    assert any("epoch" in label.lower() for label in labels), labels


def test_detect_executes_on_a_raster_layer(toolbox, arcpy, trained_run, kampala, mosaic, tmp_path):
    import numpy as np
    import pyogrio
    import rasterio
    import shapely
    from pyproj import Transformer

    tool, params = tool_and_params(toolbox, "detect")
    out = tmp_path / "detect"
    fill(arcpy, params, model=str(trained_run / "best_model.dlpk"), imagery=str(mosaic), output_folder=str(out))
    assert arcpy.validate(tool, params) == {}
    messages = arcpy.Messages()
    tool.execute(params, messages)

    with rasterio.open(param(params, "probability").value) as prob, rasterio.open(mosaic) as src:
        assert prob.crs == src.crs
        for a, b in zip(prob.bounds, src.bounds, strict=True):
            assert abs(a - b) < 1.0  # metres: the probability raster covers the imagery
        assert prob.read(1).max() > 0
    gpkg, table = param(params, "footprints").value.rsplit(os.sep, 1)
    assert table == "main.footprints"
    _, _, wkb, _ = pyogrio.raw.read(gpkg, layer="footprints")
    footprints = shapely.from_wkb(wkb)
    assert len(footprints) == param(params, "count").value > 0
    # Footprints land on the reference buildings: most detected area overlaps them.
    info = pyogrio.read_info(gpkg, layer="footprints")
    _, _, ref_wkb, _ = pyogrio.raw.read(kampala.labels)
    to_out = Transformer.from_crs("EPSG:4326", info["crs"], always_xy=True)
    reference = shapely.union_all(shapely.make_valid(shapely.transform(
        shapely.from_wkb(ref_wkb), lambda xy: np.column_stack(to_out.transform(xy[:, 0], xy[:, 1])))))
    detected = shapely.union_all(shapely.make_valid(footprints))
    assert shapely.intersection(detected, reference).area / detected.area > 0.5
    assert param(params, "area").value == pytest.approx(sum(shapely.area(footprints)), rel=0.2)


def test_detect_executes_on_a_tile_url_over_the_extent(toolbox, arcpy, trained_run, kampala, tile_server, tmp_path):
    import rasterio

    tool, params = tool_and_params(toolbox, "detect")
    full = kampala_extent(arcpy, kampala)
    # The western half of the block, in Web Mercator.
    extent = arcpy.Extent(full.XMin, full.YMin, (full.XMin + full.XMax) / 2, full.YMax,
                          spatial_reference=full.spatialReference)
    out = tmp_path / "detect"
    fill(arcpy, params, model=str(trained_run / "best_model.onnx"), imagery_url=tile_server.url + "/{z}/{x}/{y}.png",
         extent=extent, output_folder=str(out), threshold=0.5)
    assert arcpy.validate(tool, params) == {}
    tool.execute(params, arcpy.Messages())
    with rasterio.open(param(params, "probability").value) as prob:
        left, bottom, right, top = prob.bounds
    size = 256 * 0.0746  # one zoom-21 tile in metres, at most the snapping to the tile grid
    assert abs(left - extent.XMin) < size and abs(right - extent.XMax) < size
    assert abs(top - extent.YMax) < size and abs(bottom - extent.YMin) < size


@pytest.mark.parametrize("execution", ["in_process", "subprocess"])
def test_cancel_stops_the_job_and_keeps_no_partial_dataset(toolbox, arcpy, kampala, tile_server, tmp_path,
                                                           monkeypatch, execution):
    monkeypatch.setenv("CAMP_EXECUTION", execution)
    monkeypatch.setenv("CAMP_PYTHON", sys.executable)
    tile_server.faults.delay_seconds = 0.3  # a remote server's pace, so there is time to cancel
    tool, params = tool_and_params(toolbox, "fetch")
    out = tmp_path / "dataset"
    fill(arcpy, params, imagery_url=tile_server.url + "/{z}/{x}/{y}.png", zoom=21,
         extent=kampala_extent(arcpy, kampala), labels=str(kampala.labels), output_folder=str(out))

    def press_cancel(name, args):
        if name == "SetProgressorPosition" and args[0] and args[0] >= 10 and not arcpy.env.isCancelled:
            arcpy.env.press_cancel()  # raises if the tool left autoCancelling on

    arcpy.progress_hooks.append(press_cancel)
    messages = arcpy.Messages()
    with pytest.raises(arcpy.ExecuteError, match="(?i)cancel"):
        tool.execute(params, messages)
    assert any("cancel" in m.lower() for m in messages.of("error"))
    assert not (out / "manifest.json").exists()
    assert sum(tile_server.requests.values()) < len(kampala.tiles)  # stopped before the end
    assert arcpy.env.autoCancelling is True


def test_failure_reaches_the_tool_as_an_error_message(toolbox, arcpy, tmp_path):
    tool, params = tool_and_params(toolbox, "train")
    empty = tmp_path / "empty"
    empty.mkdir()
    fill(arcpy, params, dataset=str(empty), output_folder=str(tmp_path / "run"), epochs=1)
    messages = arcpy.Messages()
    with pytest.raises(arcpy.ExecuteError) as caught:
        tool.execute(params, messages)
    assert messages.of("error") == [str(caught.value)]
    assert str(empty) in str(caught.value)
    assert not (tmp_path / "run" / "best_model.dlpk").exists()


def test_export_rewrites_the_deep_learning_package(toolbox, arcpy, trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("checkpoints", "*.onnx*"))
    tool, params = tool_and_params(toolbox, "package")
    out = tmp_path / "export"
    fill(arcpy, params, run_folder=str(run), formats=["dlpk"], output_folder=str(out))
    assert arcpy.validate(tool, params) == {}
    tool.execute(params, arcpy.Messages())

    dlpk = Path(param(params, "model").value)
    assert dlpk.parent == out and zipfile.is_zipfile(dlpk)
    with zipfile.ZipFile(dlpk) as z:
        names = z.namelist()
        emds = [n for n in names if n.endswith(".emd") and "/" not in n]
        assert len(emds) == 1
        emd = json.loads(z.read(emds[0]))
        assert emd["ModelFile"] in names and emd["InferenceFunction"] in names
        assert "model_card.json" in names
        card = json.loads(z.read("model_card.json"))
    assert card == json.loads((run / "model_card.json").read_text())
    assert not (out / "best_model.onnx").exists()  # only the format asked for


def test_export_refuses_a_folder_that_is_not_a_run(toolbox, arcpy, tmp_path):
    tool, params = tool_and_params(toolbox, "package")
    fill(arcpy, params, run_folder=str(tmp_path))
    assert "not a camp run folder" in arcpy.validate(tool, params)["run_folder"]
