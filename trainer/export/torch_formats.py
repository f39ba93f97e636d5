"""Model files: state dict (.pth), TorchScript (.pt) and ONNX (.onnx) with Deepness metadata.

Every file honours the I/O contract of :mod:`trainer.modelcard` and carries the model card:
TorchScript as the extra file ``model_card.json``, ONNX as the metadata entry ``camp:model_card``.

Compatibility targets, chosen from the measured facts in GUIDE.md section 3/5:
- TorchScript must load in torch 2.0.1 (ArcGIS Pro 3.3-3.5). We trace (no scripting of Python
  control flow) a model built only from conv, batch norm, ReLU, max-pool, transposed conv, concat
  and sigmoid, all of which 2.0.1 knows; the archive's file-format version stays within what 2.0.1
  reads (:data:`MAX_TORCH_201_FILE_FORMAT`), which tests check.
- ONNX must run unchanged in Deepness (onnxruntime 1.17): opset 17, the legacy exporter
  (``dynamo=False`` writes one self-contained file, no ``.onnx.data``), fixed H and W equal to the
  tile size (Deepness refuses dynamic H/W), dynamic batch only.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ExportError
from ..fileio import atomic_path
from ..modelcard import CARD_FILENAME, ModelCard
from ..progress import NullProgress, Progress

if TYPE_CHECKING:
    from torch import nn

ONNX_CARD_KEY = "camp:model_card"
ONNX_INPUT = "input"
ONNX_OUTPUT = "probability"
ONNX_OPSET = 17
PARITY_TOLERANCE = 1e-4
# caffe2/serialize/versions.h in torch 2.0.1: kMaxSupportedFileFormatVersion = 0xA.
MAX_TORCH_201_FILE_FORMAT = 10
# Deepness splits the scene into tiles overlapping by this percentage (our detect default is 25%).
DEEPNESS_TILES_OVERLAP = 25
# 0 disables Deepness's median filter, so its mask equals "probability >= seg_thresh" exactly;
# small-object removal is the job of camp detect's min_area_m2.
DEEPNESS_SMALL_SEGMENT = 0


def export_model(model: nn.Module) -> nn.Module:
    """A CPU, eval-mode copy: exports must not move or re-mode the caller's model."""
    return copy.deepcopy(model).cpu().eval()


def save_state_dict(model: nn.Module, path: Path) -> Path:
    """``best_model.pth``: plain tensors only, loadable with ``torch.load(weights_only=True)``."""
    import torch

    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def save_torchscript(model: nn.Module, card: ModelCard, path: Path) -> Path:
    """``best_model.pt``: the traced model with the card as extra file ``model_card.json``."""
    import torch

    example = torch.zeros(1, card.in_channels, card.tile_size, card.tile_size)
    with torch.no_grad():
        # _store_inputs=False: keep the archive to what torch 2.0.1 writes itself (no traced_inputs).
        traced = torch.jit.trace(export_model(model), example, _store_inputs=False)
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp), _extra_files={CARD_FILENAME: card.to_json()})
    return path


def deepness_metadata(card: ModelCard) -> dict[str, str]:
    """ONNX ``metadata_props`` for the Deepness QGIS plugin; every value JSON-encoded (GUIDE.md s5)."""
    meta: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": {str(c.value): c.name for c in card.classes},
        "tile_size": card.tile_size,
        "tiles_overlap": DEEPNESS_TILES_OVERLAP,
        "standardization_mean": [float(v) for v in card.mean],
        "standardization_std": [float(v) for v in card.std],
        "seg_thresh": float(card.threshold),
        "seg_small_segment": DEEPNESS_SMALL_SEGMENT,
    }
    if card.resolution_m is not None:
        meta["resolution"] = round(card.resolution_m * 100.0, 4)  # Deepness wants cm/px
    return {key: json.dumps(value) for key, value in meta.items()}


def save_onnx(model: nn.Module, card: ModelCard, path: Path, progress: Progress | None = None) -> Path:
    """``best_model.onnx``: one file, input ``input`` [batch, C, T, T], output ``probability``.

    Checks parity with torch (batch of 2, random normalised input) before the file is renamed
    into place, so a bad export never replaces a good one.
    """
    import onnx
    import torch

    progress = progress or NullProgress()
    module = export_model(model)
    size = card.tile_size
    example = torch.zeros(1, card.in_channels, size, size)
    with atomic_path(path) as tmp:
        with torch.no_grad():
            torch.onnx.export(module, (example,), str(tmp), dynamo=False, opset_version=ONNX_OPSET,
                              input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                              dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}})
        proto = onnx.load(str(tmp))
        props = {**deepness_metadata(card), ONNX_CARD_KEY: card.to_json()}
        del proto.metadata_props[:]
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        diff = onnx_parity(module, tmp, card)
        progress.log(f"ONNX parity: max |onnxruntime - torch| = {diff:.2e} on a batch of 2")
        if diff > PARITY_TOLERANCE:
            raise ExportError(f"ONNX export differs from the torch model by {diff:.2e} "
                              f"(> {PARITY_TOLERANCE:.0e}); the previous {path.name} was kept. "
                              "Report this with the model's architecture.")
    return path


def onnx_parity(module: nn.Module, onnx_path: Path, card: ModelCard, batch: int = 2, seed: int = 0) -> float:
    """Max absolute difference between onnxruntime and torch on one random normalised batch."""
    import numpy as np
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, card.in_channels, card.tile_size, card.tile_size)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run([ONNX_OUTPUT], {ONNX_INPUT: x})[0]
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    return float(np.abs(got - expected).max())
