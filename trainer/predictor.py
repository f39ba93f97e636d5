"""Load a trained model from any of its files and run it on uint8 image windows.

The model describes itself: every file carries the model card (ONNX metadata ``camp:model_card``,
TorchScript extra file ``model_card.json``, ``model_card.json`` in the .dlpk and the run folder),
so the caller only hands over pixels. See :mod:`trainer.modelcard` for the I/O contract::

    predictor = load_predictor("runs/kampala")          # run folder, .onnx, .pt or .dlpk
    probs = predictor.predict(batch)                    # uint8 [B,3,T,T] -> float32 [B,T,T]
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import InputError, ModelLoadError
from .modelcard import CARD_FILENAME, ModelCard

ONNX_CARD_KEY = "camp:model_card"
Backend = Literal["auto", "onnx", "torch"]
Device = Literal["auto", "cpu", "cuda"]
RUN_FILES = {"onnx": "best_model.onnx", "pt": "best_model.pt", "pth": "best_model.pth"}


def _no_card(path: Path) -> ModelLoadError:
    return ModelLoadError(f"no model card in {path}; re-export it with `camp package --run RUN_FOLDER` "
                          "so it carries tile size, bands and normalisation")


def _not_a_model(path: Path, why: object) -> ModelLoadError:
    return ModelLoadError(f"not a model: {path} ({why}); give a camp run folder, .onnx, .pt or .dlpk")


@dataclass
class Predictor:
    """A loaded model: ``predict`` maps uint8 windows to probabilities; ``card`` describes it."""

    card: ModelCard
    backend: str  # "onnx" or "torch"
    device: str  # "cpu" or "cuda"
    source: Path
    _run: Any  # callable: normalised float32 [B,3,T,T] -> float32 [B,1,T,T] (or [B,T,T])

    def normalise(self, batch: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.card.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.card.std, dtype=np.float32).reshape(1, -1, 1, 1)
        return (batch.astype(np.float32) / 255.0 - mean) / std

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """uint8 [B, bands, T, T] -> float32 probabilities [B, T, T]."""
        if batch.ndim != 4 or batch.shape[1] != self.card.in_channels:
            raise InputError(f"expected a batch shaped [B, {self.card.in_channels}, T, T], got {list(batch.shape)}")
        out = np.asarray(self._run(np.ascontiguousarray(self.normalise(batch))), dtype=np.float32)
        return out.reshape(out.shape[0], *out.shape[-2:])

    def forward_normalised(self, batch: np.ndarray) -> np.ndarray:
        """The bare model on an already normalised batch (benchmarks: the pure forward pass)."""
        return np.asarray(self._run(batch), dtype=np.float32)


def load_predictor(model: str | os.PathLike[str], backend: Backend = "auto", device: Device = "auto") -> Predictor:
    """Load a run folder (ONNX, else TorchScript, else state dict), .onnx, .pt or .dlpk."""
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelLoadError(f"model {path} does not exist; give a camp run folder, .onnx, .pt or .dlpk")
    if backend not in ("auto", "onnx", "torch"):
        raise InputError(f"backend must be auto, onnx or torch, got {backend!r}")
    if path.is_dir():
        return _load_run_folder(path, backend, device)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        if backend == "torch":
            raise InputError(f"{path} is an ONNX model; use backend 'onnx' or 'auto', or give the .pt file")
        return _load_onnx(path, device)
    if suffix in (".pt", ".pth", ".dlpk") and backend == "onnx":
        raise InputError(f"{path} is a torch model; use backend 'torch' or 'auto', or give the .onnx file")
    if suffix == ".pt":
        return _load_torchscript(path, device)
    if suffix == ".dlpk":
        return _load_dlpk(path, device)
    if suffix == ".pth":
        return _load_state_dict(path, ModelCard.read(path.parent), device)
    raise _not_a_model(path, f"unknown extension {suffix or '(none)'!r}")


def _load_run_folder(folder: Path, backend: Backend, device: Device) -> Predictor:
    files = {kind: folder / name for kind, name in RUN_FILES.items() if (folder / name).is_file()}
    if backend in ("auto", "onnx") and "onnx" in files:
        return _load_onnx(files["onnx"], device)
    if backend in ("auto", "torch") and "pt" in files:
        return _load_torchscript(files["pt"], device)
    if backend in ("auto", "torch") and "pth" in files:
        return _load_state_dict(files["pth"], ModelCard.read(folder), device)
    wanted = "best_model.onnx" if backend == "onnx" else "best_model.onnx, best_model.pt or best_model.pth"
    raise ModelLoadError(f"no model in {folder}: expected {wanted}; is this a camp run folder (camp train --out)?")


# ---------------------------------------------------------------- ONNX Runtime

def _load_onnx(path: Path, device: Device) -> Predictor:
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cuda" and not cuda:
        raise InputError("device 'cuda' was requested but ONNX Runtime has no CUDA provider here; "
                         "install onnxruntime-gpu or use --device cpu")
    if cuda and device in ("auto", "cuda"):
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors for bad files
        raise _not_a_model(path, f"ONNX Runtime cannot load it: {str(exc).splitlines()[0][:200]}") from None
    text = session.get_modelmeta().custom_metadata_map.get(ONNX_CARD_KEY)
    if not text:
        raise _no_card(path)
    card = ModelCard.from_json(text)
    input_name = session.get_inputs()[0].name
    used = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
    return Predictor(card, "onnx", used, path, lambda x: session.run(None, {input_name: x})[0])


# ---------------------------------------------------------------- torch

def _torch_device(device: Device) -> str:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was requested but torch sees no CUDA GPU; use --device cpu")
    return "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"


def _torch_predictor(module: Any, card: ModelCard, device: str, path: Path) -> Predictor:
    import torch

    module = module.to(device).eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x).to(device)).float().cpu().numpy()

    return Predictor(card, "torch", device, path, run)


def _load_torchscript(path: Path, device: Device) -> Predictor:
    import torch

    extra = {CARD_FILENAME: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/ValueError/zip errors
        raise _not_a_model(path, f"torch.jit.load failed: {str(exc).splitlines()[0][:200]}") from None
    text = extra[CARD_FILENAME]
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if not text:
        raise _no_card(path)
    return _torch_predictor(module, ModelCard.from_json(text), _torch_device(device), path)


def _load_state_dict(path: Path, card: ModelCard, device: Device) -> Predictor:
    import torch

    from .model import build_model

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise _not_a_model(path, f"torch.load failed: {str(exc).splitlines()[0][:200]}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    module = build_model(card.architecture)
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"{path} does not match the architecture in its model card ({exc}); "
                             "re-export the run with camp package") from None
    return _torch_predictor(module, card, _torch_device(device), path)


# ---------------------------------------------------------------- Esri deep learning package

def dlpk_cache_dir() -> Path:
    env = os.environ.get("CAMP_CACHE_DIR")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "camp"
    return root / "dlpk"


def _load_dlpk(path: Path, device: Device) -> Predictor:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _not_a_model(path, f"not a zip archive: {exc}") from None
    with archive:
        names = archive.namelist()
        card_name = next((n for n in names if Path(n).name == CARD_FILENAME), None)
        if card_name is None:
            raise _no_card(path)
        card = ModelCard.from_json(archive.read(card_name).decode("utf-8"))
        script = next((n for n in names if n.endswith(".pt")), None)
        if script is None:
            raise _not_a_model(path, "the package holds no TorchScript .pt file")
        # Unpack once per package content, so repeated detects reuse the extracted file.
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        target = dlpk_cache_dir() / digest / Path(script).name
        if not target.is_file():
            from .fileio import write_bytes

            write_bytes(target, archive.read(script))
    predictor = _load_torchscript_with_card(target, card, device)
    predictor.source = path
    return predictor


def _load_torchscript_with_card(path: Path, card: ModelCard, device: Device) -> Predictor:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise _not_a_model(path, f"torch.jit.load failed: {str(exc).splitlines()[0][:200]}") from None
    return _torch_predictor(module, card, _torch_device(device), path)
