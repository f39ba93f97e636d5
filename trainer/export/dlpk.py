"""``best_model.dlpk``: an Esri deep learning package for ArcGIS Pro.

A zip with ``model.emd`` at its root and the files it names beside it (GUIDE.md section 5):
the TorchScript model, the Python raster function ``CampSegmenter.py`` (class of the same name)
and ``model_card.json``; the ONNX file rides along when the run has one, for users who want it.
Key names and layout follow the .emd files ArcGIS Pro and arcgis.learn write themselves.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..fileio import atomic_path
from ..modelcard import CARD_FILENAME, ModelCard

EMD_NAME = "model.emd"
DLPK_NAME = "best_model.dlpk"
TORCHSCRIPT_NAME = "best_model.pt"
ONNX_NAME = "best_model.onnx"
INFERENCE_FUNCTION = "CampSegmenter.py"
INFERENCE_SOURCE = Path(__file__).resolve().parents[1] / "esri" / INFERENCE_FUNCTION
# Context pixels each side of a model tile that ArcGIS predicts and then discards: hides the
# weaker predictions at tile borders. 32 keeps 75% of a 256 px tile.
DEFAULT_PADDING = 32
DEFAULT_BATCH_SIZE = 4


def build_emd(card: ModelCard, with_onnx: bool = False) -> dict[str, Any]:
    """The Esri model definition for ``card`` (values from the card; nothing re-entered)."""
    emd: dict[str, Any] = {
        "Framework": "PyTorch",
        "ModelConfiguration": "CampSegmenter",
        "ModelType": "ImageClassification",
        "ModelFile": TORCHSCRIPT_NAME,
        "InferenceFunction": INFERENCE_FUNCTION,
        "ImageHeight": card.tile_size,
        "ImageWidth": card.tile_size,
        "ExtractBands": list(range(card.in_channels)),
        "DataRange": [0, 255],
        "BatchSize": DEFAULT_BATCH_SIZE,
        "ModelPadding": DEFAULT_PADDING,
        "ImageSpaceUsed": "MAP_SPACE",
        "IsMultispectral": False,
        "SupportsVariableTileSize": True,
        "Classes": [{"Value": c.value, "Name": c.name, "Color": list(c.color)}
                    for c in card.classes if c.value != 0],
        "ModelName": card.name,
        "Bands": list(card.bands),
        "NormalizationMean": [float(v) for v in card.mean],
        "NormalizationStd": [float(v) for v in card.std],
        "Threshold": float(card.threshold),
        "ModelCard": CARD_FILENAME,
        "TrainedZoom": card.zoom,
        "Metrics": dict(card.metrics),
    }
    if card.resolution_m is not None:
        emd["ResolutionMeters"] = float(card.resolution_m)
    if with_onnx:
        emd["OnnxFile"] = ONNX_NAME
    return emd


def write_dlpk(run_dir: Path, card: ModelCard) -> Path:
    """Write ``run_dir/best_model.dlpk`` from the TorchScript (and ONNX) already in ``run_dir``."""
    run_dir = Path(run_dir)
    torchscript = run_dir / TORCHSCRIPT_NAME
    if not torchscript.is_file():
        raise InputError(f"{torchscript} is missing; the .dlpk packages the TorchScript model, "
                         "so export 'pt' first (camp package --formats pt,dlpk)")
    onnx_file = run_dir / ONNX_NAME
    with_onnx = onnx_file.is_file()
    target = run_dir / DLPK_NAME
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(EMD_NAME, json.dumps(build_emd(card, with_onnx), indent=2))
        archive.writestr(CARD_FILENAME, card.to_json())
        archive.write(INFERENCE_SOURCE, INFERENCE_FUNCTION)
        archive.write(torchscript, TORCHSCRIPT_NAME)
        if with_onnx:
            archive.write(onnx_file, ONNX_NAME)
    return target
