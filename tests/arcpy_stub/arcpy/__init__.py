"""A small stand-in for arcpy, for tests only: the surface esri_toolbox/CampDetection.pyt touches.

arcpy ships only with ArcGIS Pro, so tests inject this package as ``arcpy`` (tests/test_toolbox.py's
fixture). It behaves like the real thing where the toolbox depends on it: parameters hold typed
values and messages, ``Describe`` reads real files (rasterio, pyogrio), extents project with
pyproj, ``conversion.ExportFeatures`` writes a real file, and the progressor, messages and
cancel flag are recorded so tests can assert on them. ``validate`` runs a tool's validation in
ArcGIS's order. Whatever is not here, the toolbox must not use.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

DATATYPES = {
    "GPExtent", "GPRasterLayer", "DERasterDataset", "GPString", "GPFeatureLayer", "DEFeatureClass",
    "DEFolder", "DEFile", "GPLong", "GPDouble", "GPBoolean", "GPLayer",
}
PARAMETER_TYPES = {"Required", "Optional", "Derived"}
DIRECTIONS = {"Input", "Output"}


class ExecuteError(Exception):
    """What arcpy raises when a geoprocessing tool fails."""


# ---------------------------------------------------------------- recording

calls: list[tuple[str, tuple[Any, ...]]] = []  # SetProgressor*, ResetProgressor, AddMessage ... in order
progress_hooks: list[Any] = []  # callables(name, args) run on every progressor call (to cancel mid-job)


def _record(name: str, *args: Any) -> None:
    calls.append((name, args))
    for hook in list(progress_hooks):
        hook(name, args)


def SetProgressor(type: str = "default", message: str = "", min_range: int = 0, max_range: int = 100,  # noqa: N802
                  step_value: int = 1) -> None:
    if type not in ("default", "step"):
        raise ValueError(f"SetProgressor type must be 'default' or 'step', got {type!r}")
    _record("SetProgressor", type, message, min_range, max_range, step_value)


def SetProgressorLabel(label: str) -> None:  # noqa: N802
    _record("SetProgressorLabel", label)


def SetProgressorPosition(position: int | None = None) -> None:  # noqa: N802
    if position is not None and not isinstance(position, int):
        raise TypeError(f"SetProgressorPosition takes an int, got {position!r}")
    _record("SetProgressorPosition", position)


def ResetProgressor() -> None:  # noqa: N802
    _record("ResetProgressor")


def AddMessage(message: str) -> None:  # noqa: N802
    _record("AddMessage", message)


def AddWarning(message: str) -> None:  # noqa: N802
    _record("AddWarning", message)


def AddError(message: str) -> None:  # noqa: N802
    _record("AddError", message)


class Messages:
    """The ``messages`` object ArcGIS passes to ``execute``; keeps (severity, text) pairs."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def addMessage(self, message: str) -> None:  # noqa: N802
        self.items.append(("message", str(message)))

    def addWarningMessage(self, message: str) -> None:  # noqa: N802
        self.items.append(("warning", str(message)))

    def addErrorMessage(self, message: str) -> None:  # noqa: N802
        self.items.append(("error", str(message)))

    def of(self, severity: str) -> list[str]:
        return [text for kind, text in self.items if kind == severity]


# ---------------------------------------------------------------- spatial references and extents

class SpatialReference:
    """From an EPSG code (factoryCode) or WKT; ``name`` like ArcGIS's (underscores)."""

    def __init__(self, item: int | str | None = None) -> None:
        from pyproj import CRS

        self._crs = CRS.from_user_input(item) if item is not None else None
        self.factoryCode = (self._crs.to_epsg() or 0) if self._crs is not None else 0
        self.name = self._crs.name.replace(" ", "_") if self._crs is not None else "Unknown"
        self.type = ("Geographic" if self._crs.is_geographic else "Projected") if self._crs is not None else ""

    def exportToString(self) -> str:  # noqa: N802
        # WKT, then ArcGIS's ';'-separated coordinate domain values.
        return (self._crs.to_wkt() if self._crs is not None else "") + ";-400 -400 1000000000;-100000 10000"


class Extent:
    def __init__(self, XMin: float | None = None, YMin: float | None = None, XMax: float | None = None,  # noqa: N803
                 YMax: float | None = None, ZMin: float | None = None, ZMax: float | None = None,  # noqa: N803
                 MMin: float | None = None, MMax: float | None = None,  # noqa: N803
                 spatial_reference: SpatialReference | None = None) -> None:
        self.XMin, self.YMin, self.XMax, self.YMax = XMin, YMin, XMax, YMax
        self.spatialReference = spatial_reference

    @property
    def width(self) -> float:
        return self.XMax - self.XMin

    @property
    def height(self) -> float:
        return self.YMax - self.YMin

    def projectAs(self, spatial_reference: SpatialReference) -> Extent:  # noqa: N802
        from pyproj import Transformer

        if self.spatialReference is None or self.spatialReference._crs is None:
            raise ValueError("the extent has no spatial reference to project from")
        transformer = Transformer.from_crs(self.spatialReference._crs, spatial_reference._crs, always_xy=True)
        bounds = transformer.transform_bounds(self.XMin, self.YMin, self.XMax, self.YMax)
        return Extent(*bounds, spatial_reference=spatial_reference)

    def __str__(self) -> str:
        return f"{self.XMin} {self.YMin} {self.XMax} {self.YMax}"


# ---------------------------------------------------------------- environment

class _Env:
    def __init__(self) -> None:
        self.extent: Extent | None = None
        self.autoCancelling = True
        self.overwriteOutput = False
        self.scratchFolder = tempfile.mkdtemp(prefix="arcpy-scratch-")
        self._cancelled = False

    @property
    def isCancelled(self) -> bool:  # noqa: N802 - read-only, as in ArcGIS
        return self._cancelled

    def press_cancel(self) -> None:
        """What the Cancel button does: with autoCancelling on, ArcGIS aborts the script."""
        if self.autoCancelling:
            raise KeyboardInterrupt("cancelled with autoCancelling=True: the script would be aborted")
        self._cancelled = True


env = _Env()


# ---------------------------------------------------------------- parameters

class Filter:
    def __init__(self) -> None:
        self.type = "ValueList"
        self.list: list[Any] = []


def _coerce(datatype: str, value: Any) -> Any:
    if value is None or isinstance(value, Extent):
        return value
    if datatype == "GPLong":
        return int(value)
    if datatype == "GPDouble":
        return float(value)
    if datatype == "GPBoolean":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if datatype == "GPExtent" and isinstance(value, str):
        return Extent(*(float(v) for v in value.split()[:4]))
    return value


class Parameter:
    def __init__(self, name: str | None = None, displayName: str | None = None, direction: str | None = None,  # noqa: N803
                 datatype: str | list[str] | None = None, parameterType: str | None = None,  # noqa: N803
                 enabled: bool | None = None, category: str | None = None, symbology: str | None = None,
                 multiValue: bool | None = None) -> None:  # noqa: N803
        for kind in (datatype if isinstance(datatype, list) else [datatype]):
            if kind not in DATATYPES:
                raise ValueError(f"unknown parameter datatype {kind!r}")
        if parameterType not in PARAMETER_TYPES or direction not in DIRECTIONS:
            raise ValueError(f"bad parameterType/direction {parameterType!r}/{direction!r}")
        if parameterType == "Derived" and direction != "Output":
            raise ValueError("a Derived parameter must have direction 'Output'")
        self.name, self.displayName, self.direction = name, displayName, direction
        self.datatype, self.parameterType, self.category = datatype, parameterType, category
        self.enabled = True if enabled is None else enabled
        self.multiValue = bool(multiValue)
        self.filter = Filter()
        if datatype in ("GPLong", "GPDouble"):
            self.filter.type = "Range"
        elif datatype == "DEFile":
            self.filter.type = "File"
        self._value: Any = None
        self.altered = False
        self.hasBeenValidated = False
        self.message = ""
        self._severity = ""

    @property
    def _base_type(self) -> str:
        return self.datatype[0] if isinstance(self.datatype, list) else self.datatype

    @property
    def value(self) -> Any:
        return self._value

    @value.setter
    def value(self, value: Any) -> None:
        if self.multiValue and value is not None:
            items = value.split(";") if isinstance(value, str) else list(value)
            self._value = [_coerce(self._base_type, v) for v in items]
        else:
            self._value = _coerce(self._base_type, value)

    @property
    def values(self) -> list[Any] | None:
        return self._value if self.multiValue else None

    @property
    def valueAsText(self) -> str | None:  # noqa: N802
        def fmt(v: Any) -> str:
            return ("true" if v else "false") if isinstance(v, bool) else str(v)

        if self._value is None:
            return None
        return ";".join(fmt(v) for v in self._value) if self.multiValue else fmt(self._value)

    def setErrorMessage(self, message: str) -> None:  # noqa: N802
        self.message, self._severity = message, "error"

    def setWarningMessage(self, message: str) -> None:  # noqa: N802
        if self._severity != "error":
            self.message, self._severity = message, "warning"

    def clearMessage(self) -> None:  # noqa: N802
        self.message, self._severity = "", ""

    def hasError(self) -> bool:  # noqa: N802
        return self._severity == "error"

    def hasWarning(self) -> bool:  # noqa: N802
        return self._severity == "warning"


def user_sets(parameters: list[Parameter], name: str, value: Any) -> None:
    """What typing into the tool dialog does: a new value, marked altered and not yet validated."""
    param = next(p for p in parameters if p.name == name)
    param.value = value
    param.altered = value is not None
    param.hasBeenValidated = False


def validate(tool: Any, parameters: list[Parameter]) -> dict[str, str]:
    """ArcGIS's validation order: updateParameters, internal checks, updateMessages.

    Returns {parameter name: message} for parameters that ended with an error or a warning.
    """
    tool.updateParameters(parameters)
    for p in parameters:
        p.clearMessage()
        _internal_check(p)
    tool.updateMessages(parameters)
    for p in parameters:
        p.hasBeenValidated = True
    return {p.name: p.message for p in parameters if p.message}


def _internal_check(p: Parameter) -> None:
    """The checks ArcGIS makes itself, with its error codes."""
    if p.parameterType == "Derived" or not p.enabled:
        return
    if p.value is None:
        if p.parameterType == "Required":
            p.setErrorMessage(f"ERROR 000735: {p.displayName}: Value is required")
        return
    values = p.value if p.multiValue else [p.value]
    if p.filter.type == "ValueList" and p.filter.list and any(v not in p.filter.list for v in values):
        p.setErrorMessage(f"ERROR 000800: The value is not a member of {' | '.join(map(str, p.filter.list))}.")
    elif p.filter.type == "Range" and len(p.filter.list) == 2:
        low, high = p.filter.list
        if any(not low <= v <= high for v in values):
            p.setErrorMessage(f"ERROR 000854: The value is out of the range from {low} to {high}.")
    elif p.direction == "Output" and os.path.exists(str(p.value)) and not env.overwriteOutput:
        p.setErrorMessage(f"ERROR 000725: {p.displayName}: Dataset {p.value} already exists.")
    elif p.direction == "Input" and p._base_type in ("DEFolder", "DEFile") and not os.path.exists(str(p.value)):
        p.setErrorMessage(f"ERROR 000732: {p.displayName}: Dataset {p.value} does not exist or is not supported")


# ---------------------------------------------------------------- describing data

class _Description:
    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


_GPKG_TABLE = re.compile(r"^(?P<file>.+\.gpkg)[\\/]main\.(?P<layer>\w+)$", re.IGNORECASE)


def Describe(value: Any) -> _Description:  # noqa: N802
    """Describe a raster, a vector file or a GeoPackage table (``x.gpkg/main.name``) from its file."""
    path = str(value)
    table = _GPKG_TABLE.match(path)
    if table:
        return _describe_vector(path, table["file"], table["layer"])
    if not os.path.exists(path):
        raise OSError(f'"{path}" does not exist')
    if os.path.isdir(path):
        return _Description(catalogPath=os.path.abspath(path), dataType="Folder")
    suffix = Path(path).suffix.lower()
    if suffix in (".geojson", ".json", ".gpkg", ".shp", ".fgb"):
        return _describe_vector(os.path.abspath(path), path, None)
    return _describe_raster(path)


def _describe_raster(path: str) -> _Description:
    import rasterio

    with rasterio.open(path) as src:
        sr = SpatialReference(src.crs.to_wkt()) if src.crs else SpatialReference()
        b = src.bounds
        return _Description(catalogPath=os.path.abspath(path), dataType="RasterDataset", bandCount=src.count,
                            spatialReference=sr, extent=Extent(b.left, b.bottom, b.right, b.top, spatial_reference=sr),
                            meanCellWidth=src.res[0], meanCellHeight=src.res[1], format=src.driver)


def _describe_vector(catalog_path: str, file: str, layer: str | None) -> _Description:
    import pyogrio

    if not os.path.exists(file):
        raise OSError(f'"{catalog_path}" does not exist')
    info = pyogrio.read_info(file, layer=layer)
    sr = SpatialReference(info["crs"]) if info["crs"] else SpatialReference()
    xmin, ymin, xmax, ymax = info["total_bounds"]
    shape = "Polygon" if "Polygon" in (info["geometry_type"] or "") else str(info["geometry_type"])
    return _Description(catalogPath=catalog_path, dataType="ShapeFile" if file.lower().endswith(".shp")
                        else "FeatureClass", shapeType=shape, spatialReference=sr, FIDSet="",
                        extent=Extent(xmin, ymin, xmax, ymax, spatial_reference=sr))


def Exists(value: Any) -> bool:  # noqa: N802
    try:
        Describe(value)
    except OSError:
        return False
    return True

from . import conversion  # noqa: E402,F401 - arcpy.conversion, as in the real package
