"""``stac_item.json``: a STAC 1.1.0 Item with the MLM v1.5.0 extension describing the run.

What it records is true of the files beside it: the training extent as geometry and bbox, the
model files with sizes and sha256 multihashes, relative hrefs (the folder can be moved or
uploaded as a whole), no pre-training claim, the accelerator it was trained on, and the input
scaling and output classes a user needs to run the model. :func:`validate_item` checks an item
against the STAC core and extension JSON Schemas (offline with a schema folder) plus the checks
the schemas cannot make (relative hrefs that resolve, checksums that match).
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..fileio import write_json
from ..modelcard import CARD_FILENAME, ModelCard

STAC_VERSION = "1.1.0"
MLM = "https://stac-extensions.github.io/mlm/v1.5.0/schema.json"
FILE = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
CLASSIFICATION = "https://stac-extensions.github.io/classification/v1.1.0/schema.json"
PROCESSING = "https://stac-extensions.github.io/processing/v1.1.0/schema.json"
EXTENSIONS = (MLM, FILE, CLASSIFICATION, PROCESSING)
ITEM_NAME = "stac_item.json"
SCHEMA_CACHE = Path("~/.cache/camp/schemas")
FETCH_TIMEOUT_S = 15

# file name -> (asset key, media type, mlm:artifact_type, roles); exactly these carry mlm:model.
MODEL_ASSETS: dict[str, tuple[str, str, str, list[str]]] = {
    "best_model.pt": ("model-torchscript", "application/octet-stream; application=pytorch",
                      "torch.jit.save", ["mlm:model", "mlm:weights", "mlm:compiled"]),
    "best_model.onnx": ("model-onnx", "application/octet-stream; application=onnx",
                        "onnx", ["mlm:model", "mlm:weights", "mlm:compiled"]),
    "best_model.pth": ("model-weights", "application/octet-stream; application=pytorch",
                       "torch.save", ["mlm:model", "mlm:weights"]),
    "best_model.dlpk": ("model-esri-dlpk", "application/zip", "esri.dlpk", ["mlm:model"]),
}
OTHER_ASSETS: dict[str, tuple[str, str, list[str]]] = {
    CARD_FILENAME: ("model-card", "application/json", ["metadata"]),
    "metrics.json": ("metrics", "application/json", ["metadata"]),
}
MLM_ACCELERATORS = ("amd64", "cuda", "xla", "amd-rocm", "intel-ipex-cpu", "intel-ipex-gpu", "macos-arm")
_HYPERPARAMETER_KEY = re.compile(r"^[0-9a-zA-Z_.-]+$")


# ---------------------------------------------------------------- building

def file_checksum(path: Path) -> str:
    """sha256 as a multihash in hex (0x12 = sha2-256, 0x20 = 32 bytes), as the file extension wants."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "1220" + digest.hexdigest()


def _file_fields(path: Path) -> dict[str, Any]:
    return {"file:size": path.stat().st_size, "file:checksum": file_checksum(path)}


def accelerator_of(card: ModelCard) -> str | None:
    """MLM accelerator from how the model was trained: cuda, macos-arm, or amd64 for x86 CPUs.

    "cpu" is not an MLM value (the schema rejects it); a CPU that is not x86-64 has no MLM name,
    so it is null.
    """
    used = str(card.training.get("accelerator", card.training.get("device", "cpu"))).lower()
    if used in MLM_ACCELERATORS:
        return used
    if "cuda" in used or "gpu" in used:
        return "cuda"
    if "mps" in used:
        return "macos-arm"
    return "amd64" if platform.machine().lower() in ("x86_64", "amd64") else None


def _scalars(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items()
            if _HYPERPARAMETER_KEY.match(str(k)) and isinstance(v, (str, int, float, bool)) and v is not None}


def hyperparameters_of(card: ModelCard) -> dict[str, Any]:
    """Scalar training hyperparameters plus the architecture (``mlm:hyperparameters``)."""
    source = card.training.get("hyperparameters", card.training)
    architecture = {("architecture" if k == "name" else k): v for k, v in card.architecture.items()}
    params = {**_scalars(architecture), **_scalars(source if isinstance(source, dict) else {})}
    params.update(tile_size=card.tile_size, threshold=float(card.threshold))
    return params


def _total_parameters(card: ModelCard) -> int:
    from ..model import build_model

    return sum(p.numel() for p in build_model(card.architecture).parameters())


def _datetime(card: ModelCard) -> str:
    try:
        when = datetime.fromisoformat(card.created.replace("Z", "+00:00")) if card.created else None
    except ValueError:
        when = None
    when = when or datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bands(card: ModelCard) -> list[dict[str, Any]]:
    return [{"name": band, "description": f"{band} channel, 8-bit", "data_type": "uint8"}
            for band in card.bands]


def _classes(card: ModelCard) -> list[dict[str, Any]]:
    return [{"value": c.value, "name": c.name,
             "description": c.name if c.value else "background: anything that is not a camp structure",
             "color_hint": "{:02X}{:02X}{:02X}".format(*c.color)}
            for c in card.classes]


def _model_input(card: ModelCard) -> dict[str, Any]:
    size = card.tile_size
    # (x / 255 - mean) / std == (x - 255 mean) / (255 std): a z-score on the raw 0-255 pixels.
    scaling = [{"type": "z-score", "mean": round(m * 255.0, 6), "stddev": round(s * 255.0, 6)}
               for m, s in zip(card.mean, card.std, strict=True)]
    return {
        "name": "rgb-chip",
        "description": (f"{size}x{size} RGB chip at the training ground resolution; pixels / 255, then "
                        f"(x - mean) / std with mean {list(card.mean)} and std {list(card.std)} "
                        "(0-1 scale; value_scaling gives the same on the 0-255 scale)"),
        "bands": list(card.bands),
        "input": {"shape": [-1, card.in_channels, size, size],
                  "dim_order": ["batch", "bands", "height", "width"], "data_type": "float32"},
        "value_scaling": scaling,
        "resize_type": None,
    }


def _model_output(card: ModelCard) -> dict[str, Any]:
    size = card.tile_size
    return {
        "name": "probability",
        "description": (f"probability that a pixel is a {card.positive_class.name}; the class applies "
                        f"where probability >= {card.threshold} (threshold chosen on validation data)"),
        "tasks": ["semantic-segmentation"],
        "result": {"shape": [-1, 1, size, size], "dim_order": ["batch", "channel", "height", "width"],
                   "data_type": "float32"},
        "classification:classes": _classes(card),
        "post_processing_function": {"format": "python",
                                     "expression": f"(probability >= {card.threshold}).astype('uint8')"},
    }


def _assets(run_dir: Path, card: ModelCard) -> dict[str, dict[str, Any]]:
    assets: dict[str, dict[str, Any]] = {}
    for name, (key, media_type, artifact, roles) in MODEL_ASSETS.items():
        path = run_dir / name
        if path.is_file():
            assets[key] = {"href": f"./{name}", "type": media_type, "title": f"{card.name} ({artifact})",
                           "roles": roles, "mlm:artifact_type": artifact, "bands": _bands(card),
                           **_file_fields(path)}
    for name, (key, media_type, roles) in OTHER_ASSETS.items():
        path = run_dir / name
        if path.is_file():
            assets[key] = {"href": f"./{name}", "type": media_type, "roles": roles, **_file_fields(path)}
    for path in sorted((run_dir / "plots").glob("*.png")):
        assets[f"plot-{path.stem}"] = {"href": f"./plots/{path.name}", "type": "image/png",
                                       "title": path.stem.replace("_", " "), "roles": ["overview"],
                                       **_file_fields(path)}
    return assets


def build_stac_item(run_dir: Path, card: ModelCard) -> dict[str, Any]:
    """The STAC Item (as a dict) for the model files in ``run_dir``, described by ``card``."""
    import torch

    from .. import __version__

    run_dir = Path(run_dir)
    if card.bbox is None:
        raise InputError(f"the model card of {run_dir} has no training bbox; a STAC item needs the "
                         "training extent: re-train, or add bbox [W,S,E,N] to model_card.json")
    west, south, east, north = card.bbox
    assets = _assets(run_dir, card)
    if not any("mlm:model" in a["roles"] for a in assets.values()):
        raise InputError(f"no model file (best_model.pt/.onnx/.pth/.dlpk) in {run_dir} to describe; "
                         "export a model format first (camp package --formats pt,onnx,stac)")
    accelerator = accelerator_of(card)
    properties: dict[str, Any] = {
        "datetime": _datetime(card),
        "title": f"Camp structure segmentation model {card.name}",
        "description": ("U-Net (trained from scratch, no pre-training) that maps camp structures "
                        "(shelters, buildings) in RGB aerial imagery"
                        + (f" at {card.resolution_m:.3f} m/px" if card.resolution_m else "")),
        "mlm:name": card.name,
        "mlm:architecture": "U-Net",
        "mlm:tasks": ["semantic-segmentation"],
        "mlm:framework": "pytorch",
        "mlm:framework_version": torch.__version__.split("+")[0],
        "mlm:total_parameters": _total_parameters(card),
        "mlm:pretrained": False,
        "mlm:pretrained_source": None,
        "mlm:batch_size_suggestion": 8,
        "mlm:accelerator": accelerator,
        "mlm:accelerator_constrained": False,
        "mlm:accelerator_summary": ("trained on an NVIDIA GPU; runs on CPU too" if accelerator == "cuda"
                                    else "trained on CPU; runs on CPU or GPU"),
        "mlm:hyperparameters": hyperparameters_of(card),
        "mlm:input": [_model_input(card)],
        "mlm:output": [_model_output(card)],
        "bands": _bands(card),
        "gsd": card.resolution_m,
        "processing:software": {"camp-trainer": __version__, "torch": torch.__version__},
        "processing:lineage": (f"{card.tile_size} px chips"
                               + (f" on the zoom {card.zoom} Web Mercator tile grid" if card.zoom else "")
                               + " with label masks rasterised from polygons; trained with camp train "
                               "(details in model_card.json)"),
        "camp:threshold": float(card.threshold),
        "camp:tile_size": card.tile_size,
        "camp:zoom": card.zoom,
        "camp:test_metrics": dict(card.metrics),
    }
    if card.resolution_m is None:
        del properties["gsd"]
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": list(EXTENSIONS),
        "id": card.name,
        "geometry": {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north],
                                                          [west, north], [west, south]]]},
        "bbox": [west, south, east, north],
        "properties": properties,
        "links": [],
        "assets": assets,
    }


def write_stac_item(run_dir: Path, card: ModelCard) -> Path:
    """Write ``run_dir/stac_item.json`` (atomically) and return its path."""
    return write_json(Path(run_dir) / ITEM_NAME, build_stac_item(run_dir, card))


# ---------------------------------------------------------------- validation

def _schemas_from_dir(schema_dir: Path) -> dict[str, dict[str, Any]]:
    index_path = Path(schema_dir) / "index.json"
    if not index_path.is_file():
        raise InputError(f"{schema_dir} has no index.json; --schema-dir needs a folder with index.json "
                         "mapping each schema URL to a file in it")
    index = json.loads(index_path.read_text(encoding="utf-8"))
    return {url: json.loads((Path(schema_dir) / name).read_text(encoding="utf-8")) for url, name in index.items()}


def cached_schema_path(url: str) -> Path:
    """Where a schema fetched from ``url`` is cached (~/.cache/camp/schemas)."""
    return SCHEMA_CACHE.expanduser() / (re.sub(r"[^0-9A-Za-z.-]+", "_", url.split("://", 1)[-1]) + ".json")


def _fetch_schema(url: str) -> dict[str, Any]:
    """A schema by URL, fetched once and then read from ~/.cache/camp/schemas."""
    cached = cached_schema_path(url)
    if cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    import requests

    try:
        response = requests.get(url, timeout=FETCH_TIMEOUT_S)
        response.raise_for_status()
        schema = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise InputError(f"cannot fetch the JSON schema {url} ({exc.__class__.__name__}) and it is not "
                         f"cached in {cached.parent}; offline, pass --schema-dir FOLDER (schemas plus an "
                         "index.json mapping URL -> file)") from None
    write_json(cached, schema)
    return schema


def _absolute_refs(node: Any) -> set[str]:
    """Schema URLs that a schema refers to (``$ref`` to other documents)."""
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("http"):
            found.add(ref.split("#", 1)[0])
        for value in node.values():
            found |= _absolute_refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _absolute_refs(value)
    return found


def load_schemas(extensions: list[str], schema_dir: Path | None) -> dict[str, dict[str, Any]]:
    """Extension schemas (and those they reference) keyed by URL, from ``schema_dir`` or the web cache."""
    from pystac.validation.local_validator import get_local_schema_cache

    known = set(get_local_schema_cache())
    if schema_dir is not None:
        schemas = _schemas_from_dir(schema_dir)
        missing = [url for url in extensions if url not in schemas]
        if missing:
            raise InputError(f"{schema_dir}/index.json lacks {', '.join(missing)}; add those schemas or "
                             "drop --schema-dir to fetch them")
        return schemas
    schemas: dict[str, dict[str, Any]] = {}
    pending = list(extensions)
    while pending:
        url = pending.pop()
        if url in schemas or url in known:
            continue
        schemas[url] = _fetch_schema(url)
        pending.extend(_absolute_refs(schemas[url]))
    return schemas


def _own_checks(item: dict[str, Any], base: Path | None) -> list[str]:
    """What the schemas do not check: relative hrefs that resolve, sizes and checksums that match."""
    errors: list[str] = []
    for key, asset in item.get("assets", {}).items():
        href = str(asset.get("href", ""))
        if href.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", href) or href.startswith("file:"):
            errors.append(f"asset {key!r}: href {href!r} is an absolute local path; use a path relative "
                          "to the item (./best_model.pt) so the folder can move")
            continue
        if base is None or "://" in href:
            continue
        path = (base / href).resolve()
        if not path.is_file():
            errors.append(f"asset {key!r}: {href!r} does not exist beside the item ({path})")
        elif "file:checksum" in asset and asset["file:checksum"] != file_checksum(path):
            errors.append(f"asset {key!r}: file:checksum does not match {path.name} (file changed after "
                          "export; re-run camp package --formats stac)")
        elif "file:size" in asset and asset["file:size"] != path.stat().st_size:
            errors.append(f"asset {key!r}: file:size {asset['file:size']} != {path.stat().st_size} bytes")
    return errors


def _shorten(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."


def _schema_errors(item: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> list[str]:
    import jsonschema
    import pystac
    from pystac.errors import STACValidationError
    from pystac.validation.stac_validator import JsonSchemaSTACValidator

    validator = JsonSchemaSTACValidator()
    for url, schema in schemas.items():
        # Register under the URL the item uses: processing v1.1.0's own $id says v1.0.0.
        validator.schema_cache[url] = {**schema, "$id": url}
    errors: list[str] = []
    checks = [("STAC item 1.1.0", lambda: validator.validate_core(
        item, pystac.STACObjectType.ITEM, item.get("stac_version", STAC_VERSION)))]
    checks += [(url, lambda url=url: validator.validate_extension(
        item, pystac.STACObjectType.ITEM, item.get("stac_version", STAC_VERSION), url))
        for url in item.get("stac_extensions", [])]
    for name, check in checks:
        try:
            check()
        except STACValidationError as exc:
            best = _deepest(jsonschema.exceptions.best_match(exc.source or []))
            if best is None:
                errors.append(f"{name}: {exc}")
                continue
            where = "/".join(str(p) for p in best.absolute_path) or "(item)"
            # Messages of oneOf/anyOf failures quote the whole instance: keep them readable.
            errors.append(f"{name}: {where}: {_shorten(best.message)}")
    return errors


def _deepest(error: Any) -> Any:
    """The failure behind an anyOf/oneOf error: its sub-error deepest in the item.

    A failed anyOf names the whole item as the culprit; the sub-error with the longest path
    (e.g. assets/model-onnx/file:checksum) is what the user has to fix.
    """
    while error is not None and error.context:
        error = max(error.context, key=lambda e: len(e.absolute_path))
    return error


def validate_item(item: Path | str | dict[str, Any], schema_dir: Path | None = None) -> list[str]:
    """Errors of a STAC item (a path or a dict); an empty list means valid.

    Validates STAC core 1.1.0 (schemas shipped with pystac) and every extension the item declares,
    from ``schema_dir`` (``index.json``: URL -> file) or fetched once into ~/.cache/camp/schemas.
    With a path, also checks that relative hrefs resolve and checksums match.
    """
    base = None
    if isinstance(item, dict):
        data = item
    else:
        path = Path(item)
        if not path.is_file():
            raise InputError(f"STAC item {path} does not exist; give the path of a stac_item.json")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            return [f"{path} is not valid JSON: {exc}"]
        base = path.resolve().parent
    if not isinstance(data, dict) or data.get("type") != "Feature":
        return ["not a STAC item: expected a JSON object with \"type\": \"Feature\""]
    schemas = load_schemas(list(data.get("stac_extensions", [])), schema_dir)
    return _own_checks(data, base) + _schema_errors(data, schemas)


def validate_stac_cli(item: Path, schema_dir: Path | None) -> int:
    """``camp validate-stac``: print "valid" or each error; 0 when valid, 1 otherwise."""
    errors = validate_item(item, schema_dir)
    for error in errors:
        print(error)
    if not errors:
        print("valid")
    return 1 if errors else 0
