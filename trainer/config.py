"""Job configurations: one frozen dataclass per job kind, shared by every front end.

The CLI builds its options from these fields (``metadata["help"]``), the QGIS Processing
algorithms and the ArcGIS tools fill the same fields, and an out-of-process job receives one as
JSON (``to_dict``/``from_dict``). Validation lives here, in ``__post_init__``, so every front end
gets the same messages. Imports stay stdlib-only: the plugin and ``camp --help`` load this.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from .errors import InputError

BBox = tuple[float, float, float, float]

DEFAULT_OVERPASS_URL = "https://overpass-api.de/api/interpreter"
# The main job's default: a public OpenAerialMap drone survey (Banepa, Nepal) that HOT's fAIr uses
# as its reference example, with OSM buildings from the public Overpass API.
DEFAULT_IMAGERY = "https://tiles.openaerialmap.org/62d85d11d8499800053796c1/0/62d85d11d8499800053796c2/{z}/{x}/{y}"
DEFAULT_BBOX = (85.51678, 27.63133, 85.52323, 27.63743)
DEFAULT_ZOOM = 19
DEFAULT_OSM_FILTER = "building"
MAX_ZOOM = 24


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


# ---------------------------------------------------------------- validation helpers

def validate_bbox(bbox: BBox, crs: str = "EPSG:4326") -> BBox:
    """Check order and range; lon/lat limits apply when ``crs`` is EPSG:4326."""
    if len(bbox) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox):
        raise InputError(f"bbox must be four finite numbers W,S,E,N, got {bbox!r}")
    west, south, east, north = bbox
    if west >= east or south >= north:
        raise InputError(
            f"bbox {format_bbox(bbox)} is inverted or empty: expected W,S,E,N with W < E and S < N "
            f"(e.g. --bbox {format_bbox((min(west, east), min(south, north), max(west, east), max(south, north)))})"
        )
    if crs.upper() in ("EPSG:4326", "OGC:CRS84"):
        if not (-180 <= west <= 180 and -180 <= east <= 180):
            raise InputError(f"bbox longitudes must be within -180..180, got W={west}, E={east}")
        if not (-85.06 <= south <= 85.06 and -85.06 <= north <= 85.06):
            raise InputError(
                f"bbox latitudes must be within -85.06..85.06 (Web Mercator), got S={south}, N={north}; "
                "did you swap lon and lat? The order is W,S,E,N (lon,lat,lon,lat)."
            )
    return (float(west), float(south), float(east), float(north))


def format_bbox(bbox: BBox) -> str:
    return ",".join(f"{v:.6f}".rstrip("0").rstrip(".") for v in bbox)


def validate_zoom(zoom: int) -> int:
    if not isinstance(zoom, int) or not 0 <= zoom <= MAX_ZOOM:
        raise InputError(f"zoom must be an integer from 0 to {MAX_ZOOM}, got {zoom!r}")
    return zoom


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise InputError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _fraction(name: str, value: float, upper_open: bool = True) -> None:
    if not (0 <= value < 1 if upper_open else 0 <= value <= 1):
        raise InputError(f"{name} must be in [0, 1{')' if upper_open else ']'}, got {value}")


# ---------------------------------------------------------------- (de)serialisation

class _JobConfig:
    """Mixin: JSON round trip and coercion of CLI/JSON values to the declared field types."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]):  # noqa: ANN206
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - names
        if unknown:
            raise InputError(f"unknown {cls.__name__} option(s): {', '.join(sorted(unknown))}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: coerce(v, hints[k], k) for k, v in data.items()})

    def replace(self, **changes: Any):  # noqa: ANN201
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def coerce(value: Any, hint: Any, name: str = "value") -> Any:
    """Convert a JSON/CLI value to ``hint`` (int, float, bool, str, Path, tuples, Optional, Literal)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], name)
    if origin is Literal:
        if value not in args:
            raise InputError(f"{name} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(";", ",").split(",") if v.strip()]
        item = args[0] if args else str
        return tuple(coerce(v, item, name) for v in value)
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is Path:
            return Path(os.path.expanduser(str(value)))
        if hint is str:
            return str(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be {getattr(hint, '__name__', hint)}, got {value!r}") from None
    return value


def _normalise(obj: Any) -> None:
    """Coerce every field of a frozen dataclass in place (tuples from lists, Paths from str)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is not None:
            object.__setattr__(obj, f.name, coerce(value, hints[f.name], f.name))


# ---------------------------------------------------------------- fetch

@dataclass(frozen=True)
class FetchConfig(_JobConfig):
    """Fetch image chips and label masks for an extent (``camp fetch``)."""

    bbox: BBox = field(metadata=_help("extent W,S,E,N (lon/lat unless --bbox-crs)"))
    zoom: int = field(metadata=_help("XYZ zoom level of the chip grid (21 is ~7.5 cm/px at the equator)"))
    imagery: str = field(metadata=_help(
        "imagery: an XYZ/TMS URL template with {z}/{x}/{y} ({-y} for TMS rows, {q} for quadkeys), "
        "http(s):// or file://, or a local raster (GeoTIFF/COG/VRT)"))
    out: Path = field(metadata=_help("output dataset folder"))
    labels: str = field(default="overpass", metadata=_help(
        "labels: 'overpass' (OpenStreetMap via the Overpass API), a vector file "
        "(GeoJSON/GeoPackage/Shapefile), or 'none' for negatives only"))
    bbox_crs: str = field(default="EPSG:4326", metadata=_help("CRS of --bbox"))
    osm_filter: str = field(default=DEFAULT_OSM_FILTER, metadata=_help(
        "OSM tag filter: 'building', 'amenity=refugee_site', several separated by ';', "
        "or raw Overpass filters like '[\"building\"][\"building\"!=\"no\"]'"))
    overpass_url: str = field(default=DEFAULT_OVERPASS_URL, metadata=_help("Overpass API endpoint"))
    output_format: Literal["geotiff", "esri"] = field(default="geotiff", metadata=_help(
        "geotiff: chips/ labels/ manifest.json; esri: ArcGIS 'Classified Tiles' (images/ labels/ map.txt)"))
    max_tiles: int = field(default=5000, metadata=_help("refuse extents that need more tiles than this"))
    workers: int = field(default=8, metadata=_help("concurrent tile downloads"))
    retries: int = field(default=4, metadata=_help("retries per tile on timeouts, 429 and 5xx"))
    timeout: float = field(default=30.0, metadata=_help("seconds per HTTP request"))
    cache_dir: Path | None = field(default=None, metadata=_help(
        "tile cache folder (default: $CAMP_CACHE_DIR or ~/.cache/camp/tiles)"))
    overwrite: bool = field(default=False, metadata=_help("replace a dataset already in --out"))
    resume: bool = field(default=False, metadata=_help("complete a dataset already in --out (interrupted fetch)"))

    def __post_init__(self) -> None:
        _normalise(self)
        validate_bbox(self.bbox, self.bbox_crs)
        validate_zoom(self.zoom)
        if self.max_tiles < 1:
            raise InputError(f"max_tiles must be >= 1, got {self.max_tiles}")
        if not 1 <= self.workers <= 64:
            raise InputError(f"workers must be from 1 to 64, got {self.workers}")
        _positive("retries", self.retries, allow_zero=True)
        _positive("timeout", self.timeout)
        if self.overwrite and self.resume:
            raise InputError("choose either overwrite or resume, not both")


# ---------------------------------------------------------------- train

@dataclass(frozen=True)
class TrainConfig(_JobConfig):
    """Train a U-Net on a chips dataset and export every model format (``camp train``)."""

    data: Path = field(metadata=_help(
        "dataset folder: from camp fetch, a chips/labels folder pair, or ArcGIS Classified Tiles"))
    out: Path = field(metadata=_help("run folder for models, metadata and plots"))
    epochs: int = field(default=30, metadata=_help("maximum epochs"))
    batch_size: int = field(default=8, metadata=_help("chips per batch"))
    lr: float = field(default=3e-3, metadata=_help("peak learning rate (AdamW, one-cycle schedule)"))
    weight_decay: float = field(default=1e-4, metadata=_help("AdamW weight decay"))
    base_channels: int = field(default=16, metadata=_help("U-Net width: channels of the first level (doubles per level)"))
    depth: int = field(default=4, metadata=_help("U-Net depth: number of down-sampling levels"))
    loss: Literal["bce", "bce+dice"] = field(default="bce+dice", metadata=_help("loss on logits"))
    augment: bool = field(default=True, metadata=_help("flips, rot90, brightness/contrast jitter"))
    downsample: int = field(default=1, metadata=_help(
        "train on chips shrunk by this factor (1, 2 or 4; 2 = a quarter of the pixels, ~4x faster on a CPU); "
        "the model card records the coarser ground resolution and detect resamples input to it"))
    split: Literal["random", "spatial"] = field(default="spatial", metadata=_help(
        "random: shuffle chips; spatial: hold out blocks of neighbouring tiles (no leakage)"))
    val_fraction: float = field(default=0.15, metadata=_help("share of chips for validation"))
    test_fraction: float = field(default=0.15, metadata=_help("share of chips for the test split"))
    seed: int = field(default=42, metadata=_help("random seed (splits, weights, augmentation)"))
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = field(default="auto", metadata=_help("Lightning accelerator"))
    devices: str = field(default="auto", metadata=_help("devices: 'auto', a count, or ids like '0,1'"))
    num_nodes: int = field(default=1, metadata=_help("nodes for multi-node DDP"))
    strategy: str = field(default="auto", metadata=_help("Lightning strategy: auto, ddp, ddp_spawn, ..."))
    precision: str = field(default="auto", metadata=_help("auto (bf16-mixed on capable GPUs, else 32), 32, bf16-mixed, 16-mixed"))
    num_workers: int = field(default=0, metadata=_help("DataLoader worker processes"))
    early_stopping: int = field(default=0, metadata=_help("stop after this many epochs without improvement (0: off)"))
    monitor: str = field(default="val_miou", metadata=_help("validation metric for checkpointing"))
    max_minutes: float | None = field(default=None, metadata=_help("stop training after this many minutes"))
    tracking_uri: str | None = field(default=None, metadata=_help(
        "MLflow tracking URI (default: $MLFLOW_TRACKING_URI or a sqlite store beside the run folder)"))
    experiment: str = field(default="camp-mapper", metadata=_help("MLflow experiment name"))
    register_model: str | None = field(default=None, metadata=_help("register the model in MLflow under this name"))
    log_dataset: bool = field(default=False, metadata=_help("upload the dataset to MLflow (can be large)"))
    overwrite: bool = field(default=False, metadata=_help("replace an existing run folder"))
    resume: bool = field(default=False, metadata=_help("resume training from the run folder's last checkpoint"))

    def __post_init__(self) -> None:
        _normalise(self)
        if self.epochs < 1:
            raise InputError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        _positive("lr", self.lr)
        _positive("weight_decay", self.weight_decay, allow_zero=True)
        if not 4 <= self.base_channels <= 256:
            raise InputError(f"base_channels must be from 4 to 256, got {self.base_channels}")
        if not 1 <= self.depth <= 6:
            raise InputError(f"depth must be from 1 to 6, got {self.depth}")
        if self.downsample not in (1, 2, 4):
            raise InputError(f"downsample must be 1, 2 or 4, got {self.downsample}")
        _fraction("val_fraction", self.val_fraction)
        _fraction("test_fraction", self.test_fraction)
        if self.val_fraction + self.test_fraction >= 0.9:
            raise InputError("val_fraction + test_fraction must leave at least 10% of chips for training")
        if self.num_nodes < 1:
            raise InputError(f"num_nodes must be >= 1, got {self.num_nodes}")
        if self.overwrite and self.resume:
            raise InputError("choose either overwrite or resume, not both")


# ---------------------------------------------------------------- detect

@dataclass(frozen=True)
class DetectConfig(_JobConfig):
    """Tiled inference over a raster or an XYZ extent (``camp detect``)."""

    model: str = field(metadata=_help("model: a run folder, .onnx, .pt or .dlpk"))
    imagery: str = field(metadata=_help("a local raster, or an XYZ/TMS URL template (then give --bbox)"))
    out: Path = field(metadata=_help("output folder (probability.tif, mask.tif, footprints.gpkg, summary.json)"))
    bbox: BBox | None = field(default=None, metadata=_help("extent W,S,E,N (required for a URL template; optional window of a raster)"))
    bbox_crs: str = field(default="EPSG:4326", metadata=_help("CRS of --bbox"))
    zoom: int | None = field(default=None, metadata=_help("zoom for an XYZ source (default: the model's training zoom)"))
    overlap: float = field(default=0.25, metadata=_help("window overlap as a fraction of the tile size"))
    batch_size: int = field(default=8, metadata=_help("windows per inference batch"))
    threshold: float | None = field(default=None, metadata=_help("probability threshold (default: the model's, chosen on validation)"))
    backend: Literal["auto", "onnx", "torch"] = field(default="auto", metadata=_help("inference runtime"))
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata=_help("inference device"))
    bands: tuple[int, ...] | None = field(default=None, metadata=_help("1-based raster bands to use, e.g. 3,2,1 (default: first 3)"))
    probability_dtype: Literal["uint8", "float32"] = field(default="uint8", metadata=_help("probability.tif as 0-255 or 0-1 floats"))
    resample: bool = field(default=True, metadata=_help("resample input to the model's ground resolution"))
    min_area_m2: float = field(default=2.0, metadata=_help("drop footprints smaller than this (m2)"))
    simplify_m: float = field(default=0.15, metadata=_help("simplify footprints with this tolerance (m; 0: off)"))
    overwrite: bool = field(default=False, metadata=_help("replace results already in --out"))

    def __post_init__(self) -> None:
        _normalise(self)
        if self.bbox is not None:
            validate_bbox(self.bbox, self.bbox_crs)
        if self.zoom is not None:
            validate_zoom(self.zoom)
        _fraction("overlap", self.overlap)
        if self.overlap > 0.75:
            raise InputError(f"overlap must be at most 0.75, got {self.overlap}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.threshold is not None:
            _fraction("threshold", self.threshold, upper_open=False)
        if self.bands is not None and any(b < 1 for b in self.bands):
            raise InputError(f"bands are 1-based, got {self.bands}")
        _positive("min_area_m2", self.min_area_m2, allow_zero=True)
        _positive("simplify_m", self.simplify_m, allow_zero=True)


# ---------------------------------------------------------------- evaluate

@dataclass(frozen=True)
class EvaluateConfig(_JobConfig):
    """Compare a detection with reference polygons (``camp evaluate``)."""

    prediction: Path = field(metadata=_help("a camp detect output folder"))
    labels: str = field(metadata=_help("reference polygons: a vector file, or 'overpass'"))
    bbox: BBox | None = field(default=None, metadata=_help("limit the comparison to W,S,E,N"))
    bbox_crs: str = field(default="EPSG:4326", metadata=_help("CRS of --bbox"))
    osm_filter: str = field(default=DEFAULT_OSM_FILTER, metadata=_help("OSM tag filter when labels is 'overpass'"))
    overpass_url: str = field(default=DEFAULT_OVERPASS_URL, metadata=_help("Overpass API endpoint"))
    match_iou: float = field(default=0.5, metadata=_help("IoU at which a footprint matches a reference object"))
    out: Path | None = field(default=None, metadata=_help("write the report here (default: PREDICTION/evaluation.json)"))

    def __post_init__(self) -> None:
        _normalise(self)
        if self.bbox is not None:
            validate_bbox(self.bbox, self.bbox_crs)
        _fraction("match_iou", self.match_iou, upper_open=False)


# ---------------------------------------------------------------- export

@dataclass(frozen=True)
class ExportConfig(_JobConfig):
    """(Re)write model artifacts from a run folder (``camp package``)."""

    run: Path = field(metadata=_help("run folder (holds best_model.pth and model_card.json)"))
    formats: tuple[str, ...] = field(default=("pth", "pt", "onnx", "dlpk", "stac"), metadata=_help(
        "artifacts to write: pth, pt, onnx, dlpk, stac"))
    out: Path | None = field(default=None, metadata=_help("write here instead of the run folder"))

    def __post_init__(self) -> None:
        _normalise(self)
        allowed = {"pth", "pt", "onnx", "dlpk", "stac"}
        bad = set(self.formats) - allowed
        if bad:
            raise InputError(f"unknown export format(s) {', '.join(sorted(bad))}; choose from {', '.join(sorted(allowed))}")


# ---------------------------------------------------------------- pipeline

@dataclass(frozen=True)
class PipelineConfig(_JobConfig):
    """fetch -> train -> export -> detect -> evaluate on one extent (``camp run``).

    Writes OUT/dataset, OUT/run and OUT/detect.
    """

    out: Path = field(metadata=_help("project folder: dataset/, run/, detect/ go in it"))
    bbox: BBox = field(default=DEFAULT_BBOX, metadata=_help("extent W,S,E,N (lon/lat)"))
    zoom: int = field(default=DEFAULT_ZOOM, metadata=_help("XYZ zoom level of the chip grid"))
    imagery: str = field(default=DEFAULT_IMAGERY, metadata=_help("imagery URL template or local raster"))
    labels: str = field(default="overpass", metadata=_help("'overpass' or a vector file"))
    osm_filter: str = field(default=DEFAULT_OSM_FILTER, metadata=_help("OSM tag filter"))
    overpass_url: str = field(default=DEFAULT_OVERPASS_URL, metadata=_help("Overpass API endpoint"))
    epochs: int = field(default=30, metadata=_help("maximum training epochs"))
    batch_size: int = field(default=8, metadata=_help("chips per batch"))
    lr: float = field(default=3e-3, metadata=_help("peak learning rate"))
    base_channels: int = field(default=16, metadata=_help("U-Net width"))
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = field(default="auto", metadata=_help("Lightning accelerator"))
    devices: str = field(default="auto", metadata=_help("devices"))
    max_minutes: float | None = field(default=None, metadata=_help("stop training after this many minutes"))
    max_tiles: int = field(default=5000, metadata=_help("refuse extents that need more tiles than this"))
    tracking_uri: str | None = field(default=None, metadata=_help("MLflow tracking URI"))
    overwrite: bool = field(default=False, metadata=_help("replace earlier results in --out"))
    resume: bool = field(default=False, metadata=_help("resume an interrupted run in --out"))

    def __post_init__(self) -> None:
        _normalise(self)
        # Validate early through the step configs, so a bad value fails before any download.
        self.fetch_config  # noqa: B018
        self.train_config  # noqa: B018

    @property
    def fetch_config(self) -> FetchConfig:
        return FetchConfig(bbox=self.bbox, zoom=self.zoom, imagery=self.imagery, out=self.out / "dataset",
                           labels=self.labels, osm_filter=self.osm_filter, overpass_url=self.overpass_url,
                           max_tiles=self.max_tiles, overwrite=self.overwrite, resume=self.resume)

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig(data=self.out / "dataset", out=self.out / "run", epochs=self.epochs,
                           batch_size=self.batch_size, lr=self.lr, base_channels=self.base_channels,
                           accelerator=self.accelerator, devices=self.devices, max_minutes=self.max_minutes,
                           tracking_uri=self.tracking_uri, overwrite=self.overwrite, resume=self.resume)

    @property
    def detect_config(self) -> DetectConfig:
        return DetectConfig(model=str(self.out / "run"), imagery=self.imagery, out=self.out / "detect",
                            bbox=self.bbox, zoom=self.zoom, overwrite=True)

    @property
    def evaluate_config(self) -> EvaluateConfig:
        return EvaluateConfig(prediction=self.out / "detect", labels=self.labels, bbox=self.bbox,
                              osm_filter=self.osm_filter, overpass_url=self.overpass_url)


JOB_CONFIGS: dict[str, type[_JobConfig]] = {
    "fetch": FetchConfig,
    "train": TrainConfig,
    "detect": DetectConfig,
    "evaluate": EvaluateConfig,
    "package": ExportConfig,
    "run": PipelineConfig,
}
