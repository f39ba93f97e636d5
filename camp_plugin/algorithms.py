"""Processing algorithms camp:fetch, camp:train, camp:detect, camp:evaluate.

Each fills the core's job config from its parameters and runs it through the same JobRunner as the
dock (in QGIS's Python or a configured one), so the toolbox, the model builder, batch mode and
``qgis_process`` behave alike. Parameter names are UPPERCASE constants (QuickOSM style); raster
layers that the core cannot read itself (XYZ, WMS) are exported through QGIS in
``prepareAlgorithm``, which runs on the main thread, and written in ``processAlgorithm``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputFile,
    QgsProcessingOutputFolder,
    QgsProcessingOutputNumber,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtGui import QIcon

from trainer.config import (
    DEFAULT_OSM_FILTER,
    DEFAULT_OVERPASS_URL,
    DetectConfig,
    EvaluateConfig,
    FetchConfig,
    TrainConfig,
)
from trainer.errors import CampError

from . import layer_export, resource_path
from .execution import resolve_runner
from .feedback import FeedbackProgress
from .results import apply_style
from .workflows import ImageryPlan, model_card, plan_imagery, resolve_model

GROUP_ID = "camp"
# Post-processors must outlive the algorithm instance that registers them (Processing calls them
# after the algorithm object is gone); one per style is enough.
_POST_PROCESSORS: dict[str, QgsProcessingLayerPostProcessorInterface] = {}


class _StyleLayer(QgsProcessingLayerPostProcessorInterface):
    def __init__(self, qml: str) -> None:
        super().__init__()
        self._qml = qml

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802, ANN001
        apply_style(layer, self._qml)


def _styler(qml: str) -> QgsProcessingLayerPostProcessorInterface:
    if qml not in _POST_PROCESSORS:
        _POST_PROCESSORS[qml] = _StyleLayer(qml)
    return _POST_PROCESSORS[qml]


class CampAlgorithm(QgsProcessingAlgorithm):
    """Shared plumbing: names, group, icon, running a core job with feedback."""

    NAME = ""
    DISPLAY = ""
    HELP = ""
    ICON = "camp.svg"

    def createInstance(self):  # noqa: N802, ANN201
        return type(self)()

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:  # noqa: N802
        return self.DISPLAY

    def group(self) -> str:
        return "Camp Mapper"

    def groupId(self) -> str:  # noqa: N802
        return GROUP_ID

    def shortHelpString(self) -> str:  # noqa: N802
        return self.HELP

    def icon(self) -> QIcon:
        return QIcon(str(resource_path("icons", self.ICON)))

    def run_core(self, kind: str, config: Any, feedback: QgsProcessingFeedback) -> dict[str, Any]:
        try:
            runner = resolve_runner()
            feedback.pushInfo(f"running camp {kind} {runner.describe()}")
            return runner.run(kind, config, FeedbackProgress(feedback))
        except CampError as exc:
            raise QgsProcessingException(str(exc)) from exc

    @staticmethod
    def fail(exc: CampError) -> QgsProcessingException:
        return QgsProcessingException(str(exc))

    def add_advanced(self, parameter: QgsProcessingParameterDefinition) -> None:
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(parameter)

    def imagery_plan(self, parameters: dict[str, Any], context: QgsProcessingContext, extent_param: str,
                     target_crs: str | None, pixel_size_for: Any, snap_zoom: int | None = None) -> ImageryPlan:
        """Plan reading the IMAGERY layer over the extent (main thread, from prepareAlgorithm)."""
        layer = self.parameterAsRasterLayer(parameters, "IMAGERY", context)
        if layer is None:
            raise QgsProcessingException("IMAGERY: no raster layer or file given")
        if parameters.get(extent_param):
            extent_crs = self.parameterAsExtentCrs(parameters, extent_param, context)
            extent = self.parameterAsExtent(parameters, extent_param, context, extent_crs)
        else:
            extent_crs, extent = layer.crs(), layer.extent()
        crs = layer_export.crs(target_crs) if target_crs else layer.crs()
        target_extent = layer_export.transform_extent(extent, extent_crs, crs)
        if snap_zoom is not None:
            target_extent = layer_export.snap_to_tiles(target_extent, snap_zoom)
        try:
            return plan_imagery(layer, target_extent, crs, crs, pixel_size_for(layer, target_extent, crs))
        except CampError as exc:
            raise self.fail(exc) from exc


class FetchAlgorithm(CampAlgorithm):
    NAME, DISPLAY, ICON = "fetch", "Fetch training chips", "train.svg"
    HELP = ("Cuts image chips and label masks on the XYZ tile grid at ZOOM for EXTENT. Imagery is any raster "
            "layer (XYZ/WMS layers are read through QGIS, local rasters directly) or an XYZ URL template. Labels "
            "are OpenStreetMap polygons (OSM_FILTER, via OVERPASS_URL) or a polygon layer.")
    EXTENT, IMAGERY, IMAGERY_URL, ZOOM = "EXTENT", "IMAGERY", "IMAGERY_URL", "ZOOM"
    LABELS, OSM_FILTER, OVERPASS_URL, OUTPUT_FORMAT = "LABELS", "OSM_FILTER", "OVERPASS_URL", "OUTPUT_FORMAT"
    MAX_TILES, OUTPUT_FOLDER, CHIPS = "MAX_TILES", "OUTPUT_FOLDER", "CHIPS"
    FORMATS = ("geotiff", "esri")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802, ANN001
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Extent"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.IMAGERY, "Imagery layer", optional=True))
        self.addParameter(QgsProcessingParameterString(self.IMAGERY_URL, "…or XYZ/TMS URL template", optional=True))
        self.addParameter(QgsProcessingParameterNumber(self.ZOOM, "Zoom of the chip grid", defaultValue=19,
                                                       minValue=0, maxValue=24))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.LABELS, "Label polygons (empty: OpenStreetMap)", [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterString(self.OSM_FILTER, "OpenStreetMap tag filter",
                                                       defaultValue=DEFAULT_OSM_FILTER))
        self.add_advanced(QgsProcessingParameterString(self.OVERPASS_URL, "Overpass API URL",
                                                       defaultValue=DEFAULT_OVERPASS_URL))
        self.add_advanced(QgsProcessingParameterEnum(self.OUTPUT_FORMAT, "Dataset layout",
                                                     options=["GeoTIFF chips + manifest", "ArcGIS Classified Tiles"],
                                                     defaultValue=0))
        self.add_advanced(QgsProcessingParameterNumber(self.MAX_TILES, "Refuse more tiles than", defaultValue=5000,
                                                       minValue=1))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, "Dataset folder"))
        self.addOutput(QgsProcessingOutputNumber(self.CHIPS, "Chips written"))

    def prepareAlgorithm(self, parameters, context, feedback) -> bool:  # noqa: N802, ANN001
        self._plan: ImageryPlan | None = None
        if parameters.get(self.IMAGERY) and not self.parameterAsString(parameters, self.IMAGERY_URL, context):
            zoom = self.parameterAsInt(parameters, self.ZOOM, context)
            self._plan = self.imagery_plan(
                parameters, context, self.EXTENT, layer_export.MERCATOR,
                lambda layer, extent, crs: layer_export.mercator_resolution(zoom), snap_zoom=zoom)
        return True

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802, ANN001, ANN201
        extent_crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
        extent = self.parameterAsExtent(parameters, self.EXTENT, context, extent_crs)
        out = Path(self.parameterAsString(parameters, self.OUTPUT_FOLDER, context))
        url = self.parameterAsString(parameters, self.IMAGERY_URL, context)
        try:
            if url:
                imagery = url
            elif self._plan is not None:
                imagery = self._plan.materialise(Path(tempfile.mkdtemp(prefix="camp-fetch-")), FeedbackProgress(feedback))
            else:
                raise QgsProcessingException("give IMAGERY (a raster layer) or IMAGERY_URL (an XYZ URL template)")
            labels = "overpass"
            if parameters.get(self.LABELS):
                labels = self.parameterAsCompatibleSourceLayerPath(parameters, self.LABELS, context,
                                                                   ["gpkg", "geojson", "shp"], "gpkg", feedback)
            config = FetchConfig(
                bbox=layer_export.extent_to_bbox(extent, extent_crs), zoom=self.parameterAsInt(parameters, self.ZOOM, context),
                imagery=imagery, out=out, labels=labels,
                osm_filter=self.parameterAsString(parameters, self.OSM_FILTER, context),
                overpass_url=self.parameterAsString(parameters, self.OVERPASS_URL, context) or DEFAULT_OVERPASS_URL,
                output_format=self.FORMATS[self.parameterAsEnum(parameters, self.OUTPUT_FORMAT, context)],
                max_tiles=self.parameterAsInt(parameters, self.MAX_TILES, context), resume=True)
        except CampError as exc:
            raise self.fail(exc) from exc
        result = self.run_core("fetch", config, feedback)
        return {self.OUTPUT_FOLDER: str(out), self.CHIPS: result.get("chips")}


class TrainAlgorithm(CampAlgorithm):
    NAME, DISPLAY, ICON = "train", "Train model", "train.svg"
    HELP = ("Trains a U-Net on a dataset folder (from camp:fetch, or ArcGIS Classified Tiles) and writes a run "
            "folder with best_model.onnx, .pt, .pth, .dlpk, a STAC-MLM item and the model card.")
    DATASET, EPOCHS, BATCH_SIZE, LEARNING_RATE = "DATASET", "EPOCHS", "BATCH_SIZE", "LEARNING_RATE"
    BASE_CHANNELS, DEPTH, DEVICE, OUTPUT_FOLDER = "BASE_CHANNELS", "DEPTH", "DEVICE", "OUTPUT_FOLDER"
    MODEL, MIOU = "MODEL", "MIOU"
    DEVICES = ("auto", "cpu", "gpu")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802, ANN001
        self.addParameter(QgsProcessingParameterFile(self.DATASET, "Dataset folder",
                                                     behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterNumber(self.EPOCHS, "Epochs", defaultValue=30, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(self.BATCH_SIZE, "Batch size", defaultValue=8, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(self.LEARNING_RATE, "Learning rate",
                                                       QgsProcessingParameterNumber.Double, 3e-3, minValue=1e-7))
        self.add_advanced(QgsProcessingParameterNumber(self.BASE_CHANNELS, "U-Net width (channels of the first level)",
                                                       defaultValue=16, minValue=4, maxValue=256))
        self.add_advanced(QgsProcessingParameterNumber(self.DEPTH, "U-Net depth", defaultValue=4, minValue=1, maxValue=6))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", options=list(self.DEVICES), defaultValue=0))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, "Run folder"))
        self.addOutput(QgsProcessingOutputFile(self.MODEL, "ONNX model"))
        self.addOutput(QgsProcessingOutputNumber(self.MIOU, "Test mean IoU"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802, ANN001, ANN201
        out = Path(self.parameterAsString(parameters, self.OUTPUT_FOLDER, context))
        try:
            config = TrainConfig(
                data=self.parameterAsFile(parameters, self.DATASET, context), out=out,
                epochs=self.parameterAsInt(parameters, self.EPOCHS, context),
                batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
                lr=self.parameterAsDouble(parameters, self.LEARNING_RATE, context),
                base_channels=self.parameterAsInt(parameters, self.BASE_CHANNELS, context),
                depth=self.parameterAsInt(parameters, self.DEPTH, context),
                accelerator=self.DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
                tracking_uri=f"sqlite:///{(out.parent / 'mlflow.db').as_posix()}")
        except CampError as exc:
            raise self.fail(exc) from exc
        result = self.run_core("train", config, feedback)
        metrics = result.get("metrics") or {}
        return {self.OUTPUT_FOLDER: str(out), self.MODEL: str(out / "best_model.onnx"),
                self.MIOU: metrics.get("test_miou", metrics.get("miou"))}


class DetectAlgorithm(CampAlgorithm):
    NAME, DISPLAY, ICON = "detect", "Detect camp structures", "detect.svg"
    HELP = ("Runs a trained model (a run folder, .onnx, .pt or .dlpk) over IMAGERY (a raster layer or file; "
            "XYZ/WMS layers are read through QGIS at the model's ground resolution) and writes "
            "probability.tif, mask.tif, footprints.gpkg and summary.json to OUTPUT_FOLDER.")
    MODEL, IMAGERY, EXTENT, THRESHOLD = "MODEL", "IMAGERY", "EXTENT", "THRESHOLD"
    MIN_AREA, BACKEND, OUTPUT_FOLDER = "MIN_AREA", "BACKEND", "OUTPUT_FOLDER"
    PROBABILITY, MASK, FOOTPRINTS, COUNT, AREA = "PROBABILITY", "MASK", "FOOTPRINTS", "COUNT", "AREA"
    BACKENDS = ("auto", "onnx", "torch")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802, ANN001
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, "Model (run folder, .onnx, .pt, .dlpk or a run's model_card.json)"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.IMAGERY, "Imagery"))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Extent (empty: the whole layer)", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.THRESHOLD, "Probability threshold (-1: the model's)", QgsProcessingParameterNumber.Double,
            -1.0, minValue=-1.0, maxValue=1.0))
        self.add_advanced(QgsProcessingParameterNumber(self.MIN_AREA, "Drop footprints smaller than (m²)",
                                                       QgsProcessingParameterNumber.Double, 2.0, minValue=0.0))
        self.add_advanced(QgsProcessingParameterEnum(self.BACKEND, "Runtime", options=list(self.BACKENDS),
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, "Output folder"))
        self.addOutput(QgsProcessingOutputRasterLayer(self.PROBABILITY, "Probability"))
        self.addOutput(QgsProcessingOutputRasterLayer(self.MASK, "Mask"))
        self.addOutput(QgsProcessingOutputVectorLayer(self.FOOTPRINTS, "Footprints", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber(self.COUNT, "Footprint count"))
        self.addOutput(QgsProcessingOutputNumber(self.AREA, "Footprint area (m²)"))

    def checkParameterValues(self, parameters, context):  # noqa: N802, ANN001, ANN201
        # A file parameter rejects folders, but a run folder is the natural MODEL: check its card instead.
        model = parameters.get(self.MODEL)
        if isinstance(model, str) and Path(model).expanduser().is_dir():
            parameters = {**parameters, self.MODEL: str(Path(model).expanduser() / "model_card.json")}
        return super().checkParameterValues(parameters, context)

    def prepareAlgorithm(self, parameters, context, feedback) -> bool:  # noqa: N802, ANN001
        try:
            self._model = resolve_model(self.parameterAsString(parameters, self.MODEL, context))
        except CampError as exc:
            raise self.fail(exc) from exc
        ground = model_card(self._model).get("resolution_m")

        def pixel_size(layer, extent, crs) -> float:  # noqa: ANN001
            if ground:
                return layer_export.pixel_size_for_ground(extent, crs, float(ground))
            return layer.rasterUnitsPerPixelX()

        self._plan = self.imagery_plan(parameters, context, self.EXTENT, None, pixel_size)
        return True

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802, ANN001, ANN201
        out = Path(self.parameterAsString(parameters, self.OUTPUT_FOLDER, context))
        threshold = self.parameterAsDouble(parameters, self.THRESHOLD, context)
        work = Path(tempfile.mkdtemp(prefix="camp-detect-"))
        try:
            imagery = self._plan.materialise(work, FeedbackProgress(feedback))
            config = DetectConfig(
                model=str(self._model), imagery=imagery, out=out, bbox=self._plan.bbox,
                threshold=threshold if threshold >= 0 else None,
                min_area_m2=self.parameterAsDouble(parameters, self.MIN_AREA, context),
                backend=self.BACKENDS[self.parameterAsEnum(parameters, self.BACKEND, context)], overwrite=True)
        except CampError as exc:
            raise self.fail(exc) from exc
        try:
            result = self.run_core("detect", config, feedback)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        outputs = {self.OUTPUT_FOLDER: str(out), self.PROBABILITY: str(out / "probability.tif"),
                   self.MASK: str(out / "mask.tif"), self.FOOTPRINTS: str(out / "footprints.gpkg"),
                   self.COUNT: result.get("footprint_count"), self.AREA: result.get("total_area_m2")}
        if context.project() is not None:
            for key, name, qml in ((self.PROBABILITY, "probability", "probability.qml"),
                                   (self.FOOTPRINTS, "footprints", "footprints.qml")):
                details = QgsProcessingContext.LayerDetails(name, context.project(), key)
                details.setPostProcessor(_styler(qml))
                context.addLayerToLoadOnCompletion(outputs[key], details)
        return outputs


class EvaluateAlgorithm(CampAlgorithm):
    NAME, DISPLAY, ICON = "evaluate", "Evaluate detections", "detect.svg"
    HELP = ("Compares a detect output folder with reference polygons (a layer, or OpenStreetMap when LABELS is "
            "empty) and writes an evaluation report: pixel IoU, precision, recall, F1 and object matches.")
    PREDICTION, LABELS, EXTENT, OSM_FILTER = "PREDICTION", "LABELS", "EXTENT", "OSM_FILTER"
    OVERPASS_URL, MATCH_IOU, OUTPUT, REPORT = "OVERPASS_URL", "MATCH_IOU", "OUTPUT", "REPORT"

    def initAlgorithm(self, config=None) -> None:  # noqa: N802, ANN001
        self.addParameter(QgsProcessingParameterFile(self.PREDICTION, "Detect output folder",
                                                     behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.LABELS, "Reference polygons (empty: OpenStreetMap)", [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Limit to extent", optional=True))
        self.addParameter(QgsProcessingParameterString(self.OSM_FILTER, "OpenStreetMap tag filter",
                                                       defaultValue=DEFAULT_OSM_FILTER))
        self.add_advanced(QgsProcessingParameterString(self.OVERPASS_URL, "Overpass API URL",
                                                       defaultValue=DEFAULT_OVERPASS_URL))
        self.add_advanced(QgsProcessingParameterNumber(self.MATCH_IOU, "Object match IoU",
                                                       QgsProcessingParameterNumber.Double, 0.5, minValue=0.0, maxValue=1.0))
        self.addOutput(QgsProcessingOutputFile(self.REPORT, "Evaluation report (JSON)"))
        self.addOutput(QgsProcessingOutputFolder(self.PREDICTION, "Detect folder"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802, ANN001, ANN201
        prediction = Path(self.parameterAsFile(parameters, self.PREDICTION, context))
        labels = "overpass"
        if parameters.get(self.LABELS):
            labels = self.parameterAsCompatibleSourceLayerPath(parameters, self.LABELS, context,
                                                               ["gpkg", "geojson", "shp"], "gpkg", feedback)
        bbox = None
        if parameters.get(self.EXTENT):
            extent_crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
            bbox = layer_export.extent_to_bbox(self.parameterAsExtent(parameters, self.EXTENT, context, extent_crs),
                                               extent_crs)
        try:
            config = EvaluateConfig(prediction=prediction, labels=labels, bbox=bbox,
                                    osm_filter=self.parameterAsString(parameters, self.OSM_FILTER, context),
                                    overpass_url=self.parameterAsString(parameters, self.OVERPASS_URL, context)
                                    or DEFAULT_OVERPASS_URL,
                                    match_iou=self.parameterAsDouble(parameters, self.MATCH_IOU, context))
        except CampError as exc:
            raise self.fail(exc) from exc
        result = self.run_core("evaluate", config, feedback)
        report = result.get("report") or result.get("out") or str(prediction / "evaluation.json")
        return {self.REPORT: str(report), self.PREDICTION: str(prediction)}


ALGORITHMS = (FetchAlgorithm, TrainAlgorithm, DetectAlgorithm, EvaluateAlgorithm)
