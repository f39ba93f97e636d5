"""arcpy adapters: parameters, extents, layers and environment checks for the tools.

Each function turns one ArcGIS notion into what the core's job configs take (a path, a URL, a
bbox with its CRS) or checks a value the way the core would, early, while the user is still
filling in the tool dialog.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .settings import Plan

# Vector formats the core reads directly (pyogrio); anything else (file geodatabase feature
# classes, GeoPackage layers addressed as gpkg\main.name, layers with a selection) is exported.
CORE_VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp")
MODEL_SUFFIXES = (".dlpk", ".onnx", ".pt")
# Factory codes above this are Esri's own (e.g. 102100, the old Web Mercator code).
_MAX_EPSG_CODE = 32767


def parameter(name: str, label: str, datatype: str | list[str], *, required: bool = True,
              direction: str = "Input", value: Any = None, choices: Sequence[Any] | None = None,
              value_range: tuple[float, float] | None = None, file_types: Sequence[str] | None = None,
              category: str | None = None, multi: bool = False, derived: bool = False) -> Any:
    """One ``arcpy.Parameter`` with its default and filter set (keeps getParameterInfo readable)."""
    import arcpy

    param = arcpy.Parameter(name=name, displayName=label, datatype=datatype,
                            parameterType="Derived" if derived else ("Required" if required else "Optional"),
                            direction="Output" if derived else direction, category=category,
                            multiValue=multi)
    if choices is not None:
        param.filter.type = "ValueList"
        param.filter.list = list(choices)
    elif value_range is not None:
        param.filter.type = "Range"
        param.filter.list = list(value_range)
    elif file_types is not None:
        param.filter.list = list(file_types)
    if value is not None:
        param.value = value
    return param


def by_name(parameters: Sequence[Any]) -> dict[str, Any]:
    return {p.name: p for p in parameters}


def text(param: Any) -> str | None:
    """A parameter's value as text, None when empty."""
    value = param.valueAsText
    return value if value not in (None, "", "#") else None


# ---------------------------------------------------------------- extents

def tool_extent(param: Any) -> Any:
    """The Extent parameter's value, else the Extent environment (the map's, when set), else None."""
    import arcpy

    if param.value is not None:
        return param.value
    env_extent = arcpy.env.extent
    return env_extent if isinstance(env_extent, arcpy.Extent) else None


def crs_of(spatial_reference: Any) -> str | None:
    """A CRS string pyproj understands for an arcpy SpatialReference (None when unknown)."""
    if spatial_reference is None or not spatial_reference.name or spatial_reference.name == "Unknown":
        return None
    code = spatial_reference.factoryCode
    if code:
        return f"EPSG:{code}" if code <= _MAX_EPSG_CODE else f"ESRI:{code}"
    # exportToString gives the WKT, then ';'-separated domain values.
    return spatial_reference.exportToString().split(";")[0]


def extent_bbox(extent: Any) -> tuple[tuple[float, float, float, float], str]:
    """(W, S, E, N) of an arcpy Extent in its own CRS, and that CRS; the core reprojects (pyproj)."""
    from trainer.errors import InputError

    bbox = (float(extent.XMin), float(extent.YMin), float(extent.XMax), float(extent.YMax))
    crs = crs_of(extent.spatialReference)
    if crs is None:
        if all(-180 <= v <= 180 for v in bbox[::2]) and all(-90 <= v <= 90 for v in bbox[1::2]):
            return bbox, "EPSG:4326"  # typed-in numbers without a coordinate system: lon/lat
        raise InputError(f"the extent {bbox} has no coordinate system; pick it from the map or a layer, "
                         "or type longitude/latitude values")
    return bbox, crs


def extent_lonlat(extent: Any) -> tuple[float, float, float, float]:
    """The extent in lon/lat through arcpy's own projection engine (validation only)."""
    import arcpy

    if crs_of(extent.spatialReference) not in (None, "EPSG:4326"):
        extent = extent.projectAs(arcpy.SpatialReference(4326))
    return (extent.XMin, extent.YMin, extent.XMax, extent.YMax)


# ---------------------------------------------------------------- data sources

def is_url(value: str) -> bool:
    """An XYZ/TMS template or other URL (the core reads it) rather than a layer or dataset."""
    return "://" in value or "{" in value


def imagery_source(value: Any) -> str:
    """The core's ``imagery``: a URL/template as typed, or the file behind a raster layer."""
    import arcpy

    as_text = str(value)
    return as_text if is_url(as_text) else arcpy.Describe(value).catalogPath


def labels_source(value: Any, scratch: str | None = None) -> str:
    """A vector file the core reads for a feature layer: its own file when possible, else an export.

    Exporting honours a layer's selection and definition query, as ArcGIS tools do.
    """
    import arcpy

    desc = arcpy.Describe(value)
    path = str(desc.catalogPath)
    has_selection = bool(getattr(desc, "FIDSet", ""))
    if os.path.isfile(path) and Path(path).suffix.lower() in CORE_VECTOR_SUFFIXES and not has_selection:
        return path
    folder = scratch or arcpy.env.scratchFolder
    out = os.path.join(folder, f"camp_labels_{uuid.uuid4().hex[:8]}.shp")
    arcpy.conversion.ExportFeatures(value, out)
    return out


def model_problem(path: str) -> str | None:
    """Why ``path`` is not a model the core can run (None when it looks right)."""
    import zipfile

    p = Path(path)
    if p.is_dir():
        return None if (p / "model_card.json").is_file() else (
            f"{p} is not a camp run folder (no model_card.json); choose best_model.dlpk, .onnx or .pt")
    if p.suffix.lower() not in MODEL_SUFFIXES:
        return (f"model {p.name} has the wrong file type {p.suffix or '(none)'}: choose a .dlpk, .onnx or .pt "
                "written by Train Camp Detector")
    if not p.is_file():
        return f"model {p} does not exist"
    if p.suffix.lower() == ".dlpk" and not zipfile.is_zipfile(p):
        return f"{p.name} is not a valid deep learning package (not a zip archive); export it again"
    return None


def mlflow_beside(run_folder: str) -> str:
    """The MLflow store the QGIS algorithm uses too: one sqlite database beside the run folders."""
    return f"sqlite:///{(Path(run_folder).resolve().parent / 'mlflow.db').as_posix()}"


# ---------------------------------------------------------------- environment

_REPORTS: dict[str, dict[str, Any]] = {}


def environment_report(plan: Plan) -> dict[str, Any]:
    """``camp env`` of the Python that will run the job (cached: it imports torch, which is slow)."""
    key = "" if plan.in_process else plan.python
    if key not in _REPORTS:
        if plan.in_process:
            from trainer.environment import check_environment

            _REPORTS[key] = check_environment().to_dict()
        else:
            _REPORTS[key] = _subprocess_report(plan.python)
    return _REPORTS[key]


def _subprocess_report(python: str) -> dict[str, Any]:
    from . import core_root

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(core_root()), env.get("PYTHONPATH", "")]))
    try:
        done = subprocess.run([python, "-m", "trainer", "env", "--json"], capture_output=True, text=True,
                              env=env, timeout=300, check=False)
        return json.loads(done.stdout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = str(exc)
    except json.JSONDecodeError:
        problem = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
    return {"cuda_available": False, "notes": [f"{python} -m trainer env failed: {problem}"]}


def gpu_problem(plan: Plan) -> str | None:
    """Why a GPU cannot be used by the Python that runs jobs (None when one can)."""
    report = environment_report(plan)
    if report.get("cuda_available"):
        return None
    where = "ArcGIS's Python" if plan.in_process else plan.python
    notes = " ".join(report.get("notes") or [])
    return (f"a GPU was requested but {where} has no usable CUDA GPU{': ' + notes if notes else ''}. "
            "Choose 'auto' or 'cpu', or install the CUDA build of torch there (docs/ARCGIS.md).")
