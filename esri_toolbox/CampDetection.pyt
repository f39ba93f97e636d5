"""Camp Mapper for ArcGIS Pro: fetch training chips, train, detect and package camp detectors.

Add this file with Catalog > Toolboxes > Add Toolbox (docs/ARCGIS.md). Every tool fills the same
job config as the QGIS Processing algorithm and the ``camp`` command of the same name and runs it
through the ``trainer`` core: in ArcGIS's Python when it has the packages, otherwise in the
Python environment named by CAMP_PYTHON (see esri_toolbox/camp_tools/settings.py). Parameter
names are the QGIS algorithms' names in lower case (IMAGERY -> imagery).
"""

import os
import sys
from functools import partial

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from camp_tools import make_core_importable  # noqa: E402

make_core_importable()

from camp_tools.arcgis import (  # noqa: E402
    extent_bbox,
    extent_lonlat,
    imagery_source,
    is_url,
    labels_source,
    mlflow_beside,
    model_problem,
    parameter,
    text,
    tool_extent,
)
from camp_tools.toolbase import CampTool, config_default  # noqa: E402

from trainer.config import (  # noqa: E402
    DEFAULT_OSM_FILTER,
    DEFAULT_OVERPASS_URL,
    DEFAULT_ZOOM,
    MAX_ZOOM,
    DetectConfig,
    ExportConfig,
    FetchConfig,
    TrainConfig,
)

OSM = "OpenStreetMap labels"
FOOTPRINTS_LAYER = "footprints"  # the table trainer/vectorize.py writes into footprints.gpkg
ADVANCED = "Advanced"
NEEDS_IMAGERY = "give Imagery (a raster layer or dataset) or Imagery URL (an XYZ/TMS template with {z}/{x}/{y})"
EXTENT_FOR_URL = ("Extent is required for a tile URL: choose 'Current Display Extent' or a layer's extent, "
                  "or set the Extent environment")


class Toolbox:
    def __init__(self):
        self.label = "Camp Mapper"
        self.alias = "camp"
        self.description = "Map refugee camp structures with deep learning (U-Net): chips, training, detection, DLPK."
        self.tools = [FetchTrainingChips, TrainCampDetector, DetectCamps, ExportDeepLearningPackage]


def _imagery_params():
    return [
        parameter("imagery", "Imagery (raster layer or dataset)", ["GPRasterLayer", "DERasterDataset"], required=False),
        parameter("imagery_url", "...or XYZ/TMS URL template ({z}/{x}/{y})", "GPString", required=False),
    ]


def _imagery(p, prepare):
    """The core's ``imagery``: the URL when given (as in QGIS), else the raster behind the layer."""
    url = text(p["imagery_url"])
    if url:
        return url
    if p["imagery"].value is None:
        from trainer.errors import InputError

        raise InputError(f"imagery: {NEEDS_IMAGERY}")
    return imagery_source(p["imagery"].value) if prepare else text(p["imagery"])


def _check_imagery(p):
    """One imagery source, and a raster with the 3 bands (RGB) the model reads."""
    import arcpy

    url, layer = text(p["imagery_url"]), text(p["imagery"])
    if url is None and layer is None:
        p["imagery"].setErrorMessage(NEEDS_IMAGERY)
        return
    if url is not None:
        if not is_url(url):
            p["imagery_url"].setErrorMessage(f"{url} is not a URL template: expected e.g. https://host/{{z}}/{{x}}/{{y}}.png")
        elif layer is not None:
            p["imagery"].setWarningMessage("ignored: Imagery URL is set and is used instead")
        return
    try:
        bands = arcpy.Describe(p["imagery"].value).bandCount
    except (OSError, RuntimeError) as exc:
        p["imagery"].setErrorMessage(f"cannot read the imagery {layer}: {exc}")
        return
    if bands < 3:
        p["imagery"].setErrorMessage(f"imagery {layer} has {bands} band(s); the model needs 3 (red, green, blue)")


def _check_fetch_extent(p):
    """Fetch needs an extent for a URL, and no more tiles than the cap at the chosen zoom."""
    extent = tool_extent(p["extent"])
    if extent is None:
        if text(p["imagery_url"]):
            p["extent"].setErrorMessage(EXTENT_FOR_URL)
        return
    try:
        extent_bbox(extent)  # refuses an extent without a coordinate system
        west, south, east, north = extent_lonlat(extent)
    except (ValueError, RuntimeError) as exc:  # the core's InputError is a ValueError
        p["extent"].setErrorMessage(str(exc))
        return
    zoom = p["zoom"].value
    if zoom is None or p["zoom"].hasError():
        return
    try:
        from trainer.tiling import tiles_for_bbox
    except ImportError:
        return  # this Python lacks mercantile; the job counts tiles itself, with the same message
    from trainer.errors import InputError

    try:
        tiles_for_bbox((west, south, east, north), int(zoom), p["max_tiles"].value)
    except InputError as exc:
        p["extent"].setErrorMessage(str(exc))


class FetchTrainingChips(CampTool):
    kind = "fetch"
    label = "Fetch Training Chips"
    description = ("Cut imagery into georeferenced 256x256 chips on the XYZ tile grid of a zoom level and "
                   "rasterise label polygons (your layer, or OpenStreetMap buildings) into masks.")
    FIELDS = {"bbox": "extent", "zoom": "zoom", "imagery": "imagery", "labels": "labels", "out": "output_folder",
              "osm_filter": "osm_filter", "overpass_url": "overpass_url", "max_tiles": "max_tiles",
              "overwrite": "overwrite", "resume": "resume"}

    def getParameterInfo(self):
        d = partial(config_default, FetchConfig)
        return [
            parameter("extent", "Extent (empty: the Extent environment, or the whole raster)", "GPExtent",
                      required=False),
            *_imagery_params(),
            parameter("zoom", "Zoom of the chip grid", "GPLong", value=DEFAULT_ZOOM, value_range=(0, MAX_ZOOM)),
            parameter("labels", "Label polygons (empty: OpenStreetMap)", "GPFeatureLayer", required=False),
            parameter("osm_filter", "OpenStreetMap tag filter", "GPString", value=d("osm_filter"), category=OSM),
            parameter("overpass_url", "Overpass API URL", "GPString", value=d("overpass_url"), category=OSM),
            parameter("output_format", "Dataset layout", "GPString", value=d("output_format"),
                      choices=["geotiff", "esri"], category=ADVANCED),
            parameter("max_tiles", "Refuse more tiles than", "GPLong", value=d("max_tiles"),
                      value_range=(1, 10_000_000), category=ADVANCED),
            parameter("output_folder", "Dataset folder", "DEFolder", direction="Output"),
            parameter("overwrite", "Overwrite an existing dataset", "GPBoolean", value=False, required=False),
            parameter("resume", "Resume an interrupted fetch", "GPBoolean", value=False, required=False),
            parameter("chips", "Chips written", "GPLong", derived=True),
        ]

    def update(self, p):
        use_osm = p["labels"].value is None
        p["osm_filter"].enabled = use_osm
        p["overpass_url"].enabled = use_osm

    def check(self, p):
        _check_imagery(p)
        _check_fetch_extent(p)
        self.check_output_folder(p)

    def build_config(self, p, prepare):
        import arcpy

        extent = tool_extent(p["extent"])
        if extent is None and not text(p["imagery_url"]) and p["imagery"].value is not None:
            extent = arcpy.Describe(p["imagery"].value).extent  # the whole raster
        if extent is None:
            from trainer.errors import InputError

            raise InputError(f"bbox: {EXTENT_FOR_URL}")
        bbox, crs = extent_bbox(extent)
        labels = "overpass"
        if p["labels"].value is not None:
            labels = labels_source(p["labels"].value) if prepare else text(p["labels"])
        return FetchConfig(
            bbox=bbox, bbox_crs=crs, zoom=int(p["zoom"].value), imagery=_imagery(p, prepare), labels=labels,
            out=text(p["output_folder"]), osm_filter=text(p["osm_filter"]) or DEFAULT_OSM_FILTER,
            overpass_url=text(p["overpass_url"]) or DEFAULT_OVERPASS_URL, output_format=text(p["output_format"]),
            max_tiles=int(p["max_tiles"].value), overwrite=bool(p["overwrite"].value),
            resume=bool(p["resume"].value))

    def set_outputs(self, p, result, messages):
        p["chips"].value = int(result["chips"])
        messages.addMessage(f"{result['chips']} chips ({result['labelled_chips']} with labels), "
                            f"{result['label_polygons']} label polygons in {result['out']}")
        for problem in result.get("problems", []):
            messages.addWarningMessage(problem)


class TrainCampDetector(CampTool):
    kind = "train"
    label = "Train Camp Detector"
    description = ("Train a U-Net on a chips dataset (from Fetch Training Chips or ArcGIS 'Export Training Data "
                   "For Deep Learning', Classified Tiles) and write the model as .dlpk, ONNX, TorchScript and STAC.")
    FIELDS = {"data": "dataset", "out": "output_folder", "epochs": "epochs", "batch_size": "batch_size",
              "lr": "learning_rate", "base_channels": "base_channels", "depth": "depth", "loss": "loss",
              "split": "split", "val_fraction": "val_fraction", "test_fraction": "test_fraction",
              "accelerator": "device", "devices": "devices", "max_minutes": "max_minutes",
              "overwrite": "overwrite", "resume": "resume"}

    def getParameterInfo(self):
        d = partial(config_default, TrainConfig)
        return [
            parameter("dataset", "Dataset folder", "DEFolder"),
            parameter("epochs", "Epochs", "GPLong", value=d("epochs"), value_range=(1, 10_000)),
            parameter("batch_size", "Batch size", "GPLong", value=d("batch_size"), value_range=(1, 1024)),
            parameter("learning_rate", "Learning rate", "GPDouble", value=d("lr"), value_range=(1e-7, 1.0)),
            parameter("base_channels", "U-Net width (channels of the first level)", "GPLong",
                      value=d("base_channels"), value_range=(4, 256), category=ADVANCED),
            parameter("depth", "U-Net depth", "GPLong", value=d("depth"), value_range=(1, 6), category=ADVANCED),
            parameter("loss", "Loss", "GPString", value=d("loss"), choices=["bce", "bce+dice"], category=ADVANCED),
            parameter("augment", "Augment (flips, rotations, colour)", "GPBoolean", value=d("augment"),
                      required=False, category=ADVANCED),
            parameter("split", "Validation split", "GPString", value=d("split"), choices=["spatial", "random"],
                      category=ADVANCED),
            parameter("val_fraction", "Validation fraction", "GPDouble", value=d("val_fraction"),
                      value_range=(0.0, 0.9), category=ADVANCED),
            parameter("test_fraction", "Test fraction", "GPDouble", value=d("test_fraction"),
                      value_range=(0.0, 0.9), category=ADVANCED),
            parameter("seed", "Random seed", "GPLong", value=d("seed"), category=ADVANCED),
            parameter("device", "Device", "GPString", value="auto", choices=["auto", "cpu", "gpu"]),
            parameter("devices", "GPUs ('auto', a count, or ids like 0,1)", "GPString", value=d("devices"),
                      category=ADVANCED),
            parameter("max_minutes", "Stop after minutes", "GPDouble", required=False, category=ADVANCED),
            parameter("tracking_uri", "MLflow tracking URI (empty: beside the run folder)", "GPString",
                      required=False, category="MLflow"),
            parameter("experiment", "MLflow experiment", "GPString", value=d("experiment"), category="MLflow"),
            parameter("output_folder", "Run folder", "DEFolder", direction="Output"),
            parameter("overwrite", "Overwrite an existing run", "GPBoolean", value=False, required=False),
            parameter("resume", "Resume from the last checkpoint", "GPBoolean", value=False, required=False),
            parameter("model", "Deep learning package (.dlpk)", "DEFile", derived=True),
            parameter("miou", "Test mean IoU", "GPDouble", derived=True),
        ]

    def check(self, p):
        self.check_output_folder(p)
        self.check_gpu(p["device"], ("gpu",))

    def build_config(self, p, prepare):
        out = text(p["output_folder"])
        optional = {}
        if p["max_minutes"].value is not None:
            optional["max_minutes"] = float(p["max_minutes"].value)
        return TrainConfig(
            data=text(p["dataset"]), out=out, epochs=int(p["epochs"].value),
            batch_size=int(p["batch_size"].value), lr=float(p["learning_rate"].value),
            base_channels=int(p["base_channels"].value), depth=int(p["depth"].value), loss=text(p["loss"]),
            augment=bool(p["augment"].value), split=text(p["split"]), val_fraction=float(p["val_fraction"].value),
            test_fraction=float(p["test_fraction"].value), seed=int(p["seed"].value),
            accelerator=text(p["device"]), devices=text(p["devices"]) or "auto",
            # Same default store as the QGIS algorithm: one MLflow database beside the run folders.
            tracking_uri=text(p["tracking_uri"]) or mlflow_beside(out),
            experiment=text(p["experiment"]) or "camp-mapper", overwrite=bool(p["overwrite"].value),
            resume=bool(p["resume"].value), **optional)

    def set_outputs(self, p, result, messages):
        p["model"].value = result["artifacts"]["dlpk"]
        metrics = result.get("metrics") or {}
        if "miou" in metrics:
            p["miou"].value = float(metrics["miou"])
            messages.addMessage(f"test mean IoU {metrics['miou']:.3f} at threshold {result['threshold']:.2f}")
        messages.addMessage(f"deep learning package: {result['artifacts']['dlpk']}")


class DetectCamps(CampTool):
    kind = "detect"
    label = "Detect Camps"
    description = ("Run a trained model over a raster or an XYZ/TMS extent; write a probability raster, a mask "
                   "and footprint polygons (GeoPackage), and add them to the map.")
    FIELDS = {"model": "model", "imagery": "imagery", "out": "output_folder", "bbox": "extent", "zoom": "zoom",
              "overlap": "overlap", "batch_size": "batch_size", "threshold": "threshold", "device": "device",
              "backend": "backend", "min_area_m2": "min_area", "simplify_m": "simplify_m", "overwrite": "overwrite"}

    def getParameterInfo(self):
        d = partial(config_default, DetectConfig)
        return [
            parameter("model", "Model (.dlpk, .onnx or .pt)", "DEFile", file_types=["dlpk", "onnx", "pt"]),
            *_imagery_params(),
            parameter("extent", "Extent (empty: the Extent environment, or the whole raster)", "GPExtent",
                      required=False),
            parameter("zoom", "Zoom for a tile URL (empty: the model's)", "GPLong", required=False,
                      value_range=(0, MAX_ZOOM)),
            parameter("threshold", "Probability threshold (empty: the model's)", "GPDouble", required=False,
                      value_range=(0.0, 1.0)),
            parameter("min_area", "Drop footprints smaller than (m²)", "GPDouble", value=d("min_area_m2"),
                      value_range=(0.0, 1e9), category=ADVANCED),
            parameter("backend", "Runtime", "GPString", value=d("backend"), choices=["auto", "onnx", "torch"],
                      category=ADVANCED),
            parameter("device", "Device", "GPString", value=d("device"), choices=["auto", "cpu", "cuda"],
                      category=ADVANCED),
            parameter("overlap", "Window overlap", "GPDouble", value=d("overlap"), value_range=(0.0, 0.75),
                      category=ADVANCED),
            parameter("batch_size", "Batch size", "GPLong", value=d("batch_size"), value_range=(1, 1024),
                      category=ADVANCED),
            parameter("simplify_m", "Simplify tolerance (m)", "GPDouble", value=d("simplify_m"),
                      value_range=(0.0, 100.0), category=ADVANCED),
            parameter("output_folder", "Output folder", "DEFolder", direction="Output"),
            parameter("overwrite", "Overwrite earlier results", "GPBoolean", value=False, required=False),
            parameter("probability", "Probability", "DERasterDataset", derived=True),
            parameter("mask", "Mask", "DERasterDataset", derived=True),
            parameter("footprints", "Footprints", "DEFeatureClass", derived=True),
            parameter("count", "Footprint count", "GPLong", derived=True),
            parameter("area", "Footprint area (m²)", "GPDouble", derived=True),
        ]

    def check(self, p):
        _check_imagery(p)
        model = text(p["model"])
        problem = model_problem(model) if model else None
        if problem:
            p["model"].setErrorMessage(problem)
        if text(p["imagery_url"]) and tool_extent(p["extent"]) is None:
            p["extent"].setErrorMessage(EXTENT_FOR_URL)
        self.check_output_folder(p)
        self.check_gpu(p["device"], ("cuda",))

    def build_config(self, p, prepare):
        extent = tool_extent(p["extent"])
        bbox, crs = extent_bbox(extent) if extent is not None else (None, "EPSG:4326")
        optional = {k: p[k].value for k in ("zoom", "threshold") if p[k].value is not None}
        return DetectConfig(
            model=text(p["model"]), imagery=_imagery(p, prepare), out=text(p["output_folder"]), bbox=bbox,
            bbox_crs=crs, min_area_m2=float(p["min_area"].value), backend=text(p["backend"]),
            device=text(p["device"]), overlap=float(p["overlap"].value), batch_size=int(p["batch_size"].value),
            simplify_m=float(p["simplify_m"].value), overwrite=bool(p["overwrite"].value), **optional)

    def set_outputs(self, p, result, messages):
        p["probability"].value = result["probability"]
        p["mask"].value = result["mask"]
        # ArcGIS addresses a GeoPackage table as <file.gpkg>\main.<table>.
        p["footprints"].value = os.path.join(result["footprints"], "main." + FOOTPRINTS_LAYER)
        p["count"].value = int(result["footprint_count"])
        p["area"].value = float(result["total_area_m2"])
        messages.addMessage(f"{result['footprint_count']} footprints, {result['total_area_m2']:.1f} m² at threshold "
                            f"{result['threshold']:.2f} ({result['backend']} on {result['device']})")


class ExportDeepLearningPackage(CampTool):
    kind = "package"
    label = "Export Deep Learning Package"
    description = ("(Re)write a trained run's model files: the .dlpk for 'Classify Pixels Using Deep Learning', "
                   "ONNX (QGIS Deepness), TorchScript, state dict and the STAC-MLM item.")
    FIELDS = {"run": "run_folder", "formats": "formats", "out": "output_folder"}

    def getParameterInfo(self):
        return [
            parameter("run_folder", "Training run folder", "DEFolder"),
            parameter("formats", "Formats", "GPString", multi=True, value=["dlpk"],
                      choices=["dlpk", "onnx", "pt", "pth", "stac"]),
            parameter("output_folder", "Output folder (empty: the run folder)", "DEFolder", required=False,
                      direction="Output"),
            parameter("model", "Deep learning package (.dlpk)", "DEFile", derived=True),
        ]

    def check(self, p):
        run = text(p["run_folder"])
        problem = model_problem(run) if run else None
        if problem:
            p["run_folder"].setErrorMessage(problem)
        if p["output_folder"].hasError() and text(p["output_folder"]) and os.path.isdir(text(p["output_folder"])):
            p["output_folder"].clearMessage()  # exporting into an existing folder replaces only our files

    def build_config(self, p, prepare):
        out = text(p["output_folder"])
        return ExportConfig(run=text(p["run_folder"]), formats=tuple(p["formats"].values or ["dlpk"]),
                            **({"out": out} if out else {}))

    def set_outputs(self, p, result, messages):
        files = result["files"]
        if "dlpk" in files:
            p["model"].value = files["dlpk"]
        for kind, path in files.items():
            messages.addMessage(f"{kind}: {path}")
