"""What the Train and Detect buttons do, without any widgets: plan on the main thread, run in a task.

``plan_train``/``plan_detect`` validate the analyst's choices against the project (layers, extent,
model) and raise :class:`trainer.errors.InputError` with a message for the message bar. The plan
holds plain values plus a cloned raster provider, so ``execute`` can run in a QgsTask worker
thread: export the imagery through QGIS when the core cannot read the layer itself, then run the
core jobs (fetch -> train, or detect) through a :class:`JobRunner`.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterBlockFeedback,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)

from trainer.config import BBox, DetectConfig, FetchConfig, TrainConfig
from trainer.errors import InputError, ModelLoadError
from trainer.progress import Progress, SubProgress, check_cancelled

from . import layer_export
from .execution import JobRunner
from .layer_export import RasterExportPlan

MODEL_SUFFIXES = (".onnx", ".pt", ".dlpk")
WORK_DIR = ".camp-work"


def timestamped_folder(base: Path, kind: str) -> Path:
    return base / f"{kind}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


# ---------------------------------------------------------------- imagery

@dataclass
class ImageryPlan:
    """Either a path/URL the core reads itself, or a QGIS export to run in the worker thread."""

    source: str | None = None
    export: RasterExportPlan | None = None
    bbox: BBox | None = None  # lon/lat window of ``source`` (None: the whole raster)

    def materialise(self, work: Path, progress: Progress) -> str:
        """Return the imagery path/URL for the core, exporting the layer first if needed."""
        if self.export is None:
            assert self.source is not None
            return self.source
        feedback = QgsRasterBlockFeedback()
        relay = _FeedbackRelay(feedback, progress, self.export.layer_name)
        try:
            path = layer_export.write_geotiff(self.export, work / "imagery.tif", feedback)
        finally:
            relay.disconnect()
        return str(path)


class _FeedbackRelay:
    """QgsRasterBlockFeedback <-> core progress: forward progress, propagate Cancel."""

    def __init__(self, feedback: QgsRasterBlockFeedback, progress: Progress, name: str) -> None:
        self._feedback, self._progress, self._name = feedback, progress, name
        feedback.progressChanged.connect(self._on_progress)

    def _on_progress(self, percent: float) -> None:
        if self._progress.cancelled():
            self._feedback.cancel()
        self._progress.report(percent / 100.0, f"reading '{self._name}' through QGIS")

    def disconnect(self) -> None:
        self._feedback.progressChanged.disconnect(self._on_progress)


def plan_imagery(layer: QgsRasterLayer | None, extent: QgsRectangle, extent_crs: QgsCoordinateReferenceSystem,
                 target_crs: QgsCoordinateReferenceSystem, pixel_size: float) -> ImageryPlan:
    if layer is None or not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        raise InputError("no imagery layer: choose a raster layer of the project (XYZ/TMS, WMS or a local "
                         "orthophoto) as imagery, or add one with Layer > Add Layer")
    # Validates the overlap for every kind of layer (also local files read by the core).
    export = layer_export.plan_export(layer, extent, extent_crs, target_crs, pixel_size)
    local = layer_export.local_raster_path(layer)
    if local is not None:
        return ImageryPlan(source=local, bbox=layer_export.extent_to_bbox(extent, extent_crs))
    return ImageryPlan(export=export)


# ---------------------------------------------------------------- labels

def export_labels(layer: QgsVectorLayer, extent: QgsRectangle, extent_crs: QgsCoordinateReferenceSystem,
                  path: Path) -> Path:
    """Write the polygons of ``layer`` inside the extent to GeoJSON in EPSG:4326 (main thread)."""
    if not isinstance(layer, QgsVectorLayer) or not layer.isValid():
        raise InputError("the labels layer is not a valid vector layer; choose a polygon layer or OpenStreetMap")
    if layer.geometryType() != QgsWkbTypes.PolygonGeometry:
        raise InputError(f"the labels layer '{layer.name()}' has {QgsWkbTypes.geometryDisplayString(layer.geometryType())} "
                         "geometries; training needs polygons (building footprints, camp outlines)")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GeoJSON"
    options.fileEncoding = "UTF-8"
    context = QgsProject.instance().transformContext()
    options.ct = QgsCoordinateTransform(layer.crs(), layer_export.crs(layer_export.LONLAT), context)
    options.filterExtent = layer_export.transform_extent(extent, extent_crs, layer.crs())
    path.parent.mkdir(parents=True, exist_ok=True)
    error, message, *_ = QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(path), context, options)
    if error != QgsVectorFileWriter.NoError:
        raise InputError(f"cannot export the labels layer '{layer.name()}': {message}")
    return path


# ---------------------------------------------------------------- train

@dataclass(frozen=True)
class TrainRequest:
    imagery: QgsRasterLayer | None
    extent: QgsRectangle
    extent_crs: QgsCoordinateReferenceSystem
    out: Path  # project folder: dataset/ and run/ go in it
    zoom: int = 19
    imagery_url: str = ""  # an XYZ/TMS template the core fetches itself (instead of a layer)
    labels: QgsVectorLayer | None = None  # None: OpenStreetMap through Overpass
    osm_filter: str = "building"
    overpass_url: str | None = None
    epochs: int = 30
    batch_size: int = 8
    lr: float = 3e-3
    base_channels: int = 16
    depth: int = 4
    accelerator: str = "auto"
    max_tiles: int = 5000


@dataclass
class TrainPlan:
    out: Path
    imagery: ImageryPlan
    fetch: dict[str, Any]  # FetchConfig fields without imagery (known only after the export)
    train: TrainConfig
    work: Path

    @property
    def run_folder(self) -> Path:
        return self.train.out


def plan_train(request: TrainRequest) -> TrainPlan:
    """Validate a Train click (main thread). Raises InputError with the message to show."""
    if request.extent is None or request.extent.isEmpty():
        raise InputError("no extent: use the map canvas extent, a layer's extent or draw a rectangle")
    bbox = layer_export.extent_to_bbox(request.extent, request.extent_crs)
    out = Path(request.out)
    if (out / "run").exists() and any((out / "run").iterdir()):
        raise InputError(f"{out / 'run'} already holds a trained model; choose a new output folder")
    mercator = layer_export.crs(layer_export.MERCATOR)
    extent_3857 = layer_export.snap_to_tiles(
        layer_export.transform_extent(request.extent, request.extent_crs, mercator), request.zoom)
    if request.imagery_url:
        if not ("{z}" in request.imagery_url and "{x}" in request.imagery_url) and "{q}" not in request.imagery_url:
            raise InputError(f"imagery URL {request.imagery_url!r} is not an XYZ/TMS template; it needs "
                             "{z}, {x} and {y} (or {-y}, {q}), e.g. https://tiles.example.org/{z}/{x}/{y}.png")
        imagery = ImageryPlan(source=request.imagery_url)
    else:
        imagery = plan_imagery(request.imagery, extent_3857, mercator, mercator,
                               layer_export.mercator_resolution(request.zoom))
    work = out / WORK_DIR
    fetch: dict[str, Any] = {"bbox": bbox, "zoom": request.zoom, "out": out / "dataset",
                             "max_tiles": request.max_tiles, "osm_filter": request.osm_filter, "resume": True}
    if request.overpass_url:
        fetch["overpass_url"] = request.overpass_url
    if request.labels is not None:
        fetch["labels"] = str(export_labels(request.labels, request.extent, request.extent_crs,
                                            work / "labels.geojson"))
    # Validate every value now, with a placeholder for the imagery the worker thread will write.
    FetchConfig(imagery="placeholder.tif", **fetch)
    train = TrainConfig(data=out / "dataset", out=out / "run", epochs=request.epochs, batch_size=request.batch_size,
                        lr=request.lr, base_channels=request.base_channels, depth=request.depth,
                        accelerator=request.accelerator,
                        tracking_uri=f"sqlite:///{(out / 'mlflow.db').as_posix()}")
    return TrainPlan(out, imagery, fetch, train, work)


def execute_train(plan: TrainPlan, runner: JobRunner, progress: Progress) -> dict[str, Any]:
    """Worker thread: imagery -> fetch -> train. Returns the train result dict."""
    plan.work.mkdir(parents=True, exist_ok=True)
    try:
        imagery = plan.imagery.materialise(plan.work, SubProgress(progress, 0.0, 0.1, "imagery: "))
        check_cancelled(progress)
        fetch_config = FetchConfig(imagery=imagery, **plan.fetch)
        fetched = runner.run("fetch", fetch_config, SubProgress(progress, 0.1, 0.25, "fetch: "))
        check_cancelled(progress)
        result = runner.run("train", plan.train, SubProgress(progress, 0.25, 1.0, "train: "))
    finally:
        shutil.rmtree(plan.work, ignore_errors=True)
    return {**result, "dataset": fetched}


# ---------------------------------------------------------------- detect

def resolve_model(model: str, last_trained: str = "") -> Path:
    """A run folder, a model file, or 'last' (the last model trained from the dock)."""
    text = (model or "").strip()
    if text.lower() in ("last", "last trained"):
        if not last_trained:
            raise InputError("no model has been trained from this dock yet; choose a run folder, .onnx or .dlpk")
        text = last_trained
    if not text:
        raise InputError("no model: choose a run folder (from Train or camp train), a .onnx or a .dlpk file")
    path = Path(text).expanduser()
    if path.name == "model_card.json":
        path = path.parent
    if not path.exists():
        raise ModelLoadError(f"model {path} does not exist; choose a run folder, a .onnx or a .dlpk file")
    if path.is_dir():
        if not (path / "model_card.json").is_file():
            raise ModelLoadError(f"{path} is not a camp run folder (it has no model_card.json); "
                                 "choose the folder written by Train, or a .onnx/.dlpk file")
    elif path.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelLoadError(f"{path.name} is not a model this plugin can run; choose a run folder, "
                             f"or a {', '.join(MODEL_SUFFIXES)} file")
    return path


def model_card(model: Path) -> dict[str, Any]:
    """The model card JSON, read without torch/onnx (run folder, a card beside the file, or the .dlpk)."""
    candidates = [model / "model_card.json"] if model.is_dir() else [model.parent / "model_card.json"]
    for path in candidates:
        if path.is_file():
            return _json_or_empty(path.read_text(encoding="utf-8"))
    if model.suffix.lower() == ".dlpk" and zipfile.is_zipfile(model):
        with zipfile.ZipFile(model) as archive:
            for name in archive.namelist():
                if name.endswith("model_card.json"):
                    return _json_or_empty(archive.read(name).decode("utf-8"))
    return {}


def _json_or_empty(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class DetectRequest:
    model: str
    imagery: QgsRasterLayer | None
    extent: QgsRectangle
    extent_crs: QgsCoordinateReferenceSystem
    out: Path
    threshold: float | None = None
    min_area_m2: float = 2.0
    last_trained: str = ""
    fallback_pixel_size: float | None = None  # layer units/px when the model records no resolution


@dataclass
class DetectPlan:
    out: Path
    model: Path
    imagery: ImageryPlan
    options: dict[str, Any] = field(default_factory=dict)
    name: str = ""


def plan_detect(request: DetectRequest) -> DetectPlan:
    """Validate a Detect click (main thread). Raises InputError/ModelLoadError with the message to show."""
    model = resolve_model(request.model, request.last_trained)
    if request.extent is None or request.extent.isEmpty():
        raise InputError("no extent: use the map canvas extent, a layer's extent or draw a rectangle")
    layer = request.imagery
    if layer is None or not layer.isValid():
        raise InputError("no imagery layer: choose a raster layer of the project (XYZ/TMS, WMS or a local "
                         "orthophoto) to detect on")
    card = model_card(model)
    ground = card.get("resolution_m")
    layer_extent = layer_export.transform_extent(request.extent, request.extent_crs, layer.crs())
    if ground:
        # Export at the model's ground resolution: the core would resample to it anyway.
        pixel_size = layer_export.pixel_size_for_ground(layer_extent, layer.crs(), float(ground))
    else:
        pixel_size = request.fallback_pixel_size or layer.rasterUnitsPerPixelX()
    imagery = plan_imagery(layer, layer_extent, layer.crs(), layer.crs(), pixel_size)
    options: dict[str, Any] = {"min_area_m2": request.min_area_m2, "overwrite": True}
    if request.threshold is not None:
        options["threshold"] = request.threshold
    DetectConfig(model=str(model), imagery="placeholder.tif", out=request.out, **options)
    return DetectPlan(Path(request.out), model, imagery, options, f"{model.stem} on {layer.name()}")


def execute_detect(plan: DetectPlan, runner: JobRunner, progress: Progress) -> dict[str, Any]:
    """Worker thread: imagery -> detect. Returns the detect result dict."""
    # The work folder sits beside the output, which the core replaces as a whole on success.
    work = plan.out.parent / f".{plan.out.name}{WORK_DIR}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        imagery = plan.imagery.materialise(work, SubProgress(progress, 0.0, 0.2, "imagery: "))
        check_cancelled(progress)
        config = DetectConfig(model=str(plan.model), imagery=imagery, out=plan.out, bbox=plan.imagery.bbox,
                              **plan.options)
        return runner.run("detect", config, SubProgress(progress, 0.2, 1.0))
    finally:
        shutil.rmtree(work, ignore_errors=True)
