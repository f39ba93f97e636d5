"""Model artifacts of a run folder: pth, TorchScript, ONNX (+ Deepness metadata), DLPK, STAC-MLM.

``export_all`` is what ``camp train`` calls at the end of training; ``run_export`` is the
``camp package`` job, which rebuilds the model from ``best_model.pth`` + ``model_card.json`` and
rewrites the requested formats. Each file is written atomically, in dependency order: the .dlpk
packages the TorchScript (and ONNX), and the STAC item lists sizes and checksums of every file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ExportConfig
from ..errors import ExportError, InputError, ModelLoadError
from ..modelcard import CARD_FILENAME, ModelCard
from ..progress import NullProgress, Progress, check_cancelled

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ExportError", "ExportResult", "FORMATS", "FILE_NAMES", "export_all", "export_formats", "run_export"]

# Written in this order: dlpk reads pt/onnx, stac checksums everything before it.
FORMATS = ("pth", "pt", "onnx", "dlpk", "stac")
FILE_NAMES = {"pth": "best_model.pth", "pt": "best_model.pt", "onnx": "best_model.onnx",
              "dlpk": "best_model.dlpk", "stac": "stac_item.json"}


@dataclass(frozen=True)
class ExportResult:
    """Files written by ``camp package``."""

    folder: Path
    files: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "files": {k: str(v) for k, v in self.files.items()}}

    def summary(self) -> str:
        lines = [f"wrote {len(self.files)} file(s) to {self.folder}:"]
        lines += [f"  {kind:5s} {path.name} ({path.stat().st_size / 1e6:.2f} MB)"
                  for kind, path in self.files.items() if path.exists()]
        return "\n".join(lines)


def export_formats(folder: Path, model: nn.Module, card: ModelCard, formats: tuple[str, ...],
                   progress: Progress | None = None) -> dict[str, Path]:
    """Write ``formats`` (a subset of :data:`FORMATS`) of ``model`` into ``folder``; returns kind -> path.

    ``model_card.json`` is (re)written too: every other file embeds or lists it.
    """
    from .dlpk import write_dlpk
    from .stac import write_stac_item
    from .torch_formats import save_onnx, save_state_dict, save_torchscript

    progress = progress or NullProgress()
    folder = Path(folder)
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise InputError(f"unknown export format(s) {', '.join(sorted(unknown))}; choose from {', '.join(FORMATS)}")
    writers = {
        "pth": lambda path: save_state_dict(model, path),
        "pt": lambda path: save_torchscript(model, card, path),
        "onnx": lambda path: save_onnx(model, card, path, progress),
        "dlpk": lambda path: write_dlpk(folder, card),
        "stac": lambda path: write_stac_item(folder, card),
    }
    check_cancelled(progress)
    card.write(folder / CARD_FILENAME)
    written: dict[str, Path] = {}
    ordered = [kind for kind in FORMATS if kind in formats]
    for step, kind in enumerate(ordered):
        check_cancelled(progress)
        progress.report(step / len(ordered), f"exporting {FILE_NAMES[kind]}")
        written[kind] = writers[kind](folder / FILE_NAMES[kind])
        progress.log(f"wrote {written[kind]}")
    progress.report(1.0, "export done")
    return written


def export_all(run_dir: Path, model: nn.Module, card: ModelCard, progress: Progress | None = None) -> dict[str, Path]:
    """Write every format (pth, pt, onnx, dlpk, stac) and model_card.json into ``run_dir``."""
    return export_formats(Path(run_dir), model, card, FORMATS, progress)


def load_run_model(run: Path) -> tuple[nn.Module, ModelCard]:
    """The trained model and its card from a run folder (``best_model.pth`` + ``model_card.json``)."""
    import torch

    from ..model import build_model

    card = ModelCard.read(run)
    weights = Path(run) / FILE_NAMES["pth"]
    if not weights.is_file():
        raise ModelLoadError(f"no {weights.name} in {run}; camp package rebuilds models from a run "
                             "folder written by camp train")
    model = build_model(card.architecture)
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (RuntimeError, KeyError) as exc:
        raise ModelLoadError(f"{weights} does not match the architecture in {CARD_FILENAME} "
                             f"({str(exc).splitlines()[0]}); was the card edited?") from None
    return model.eval(), card


def run_export(config: ExportConfig, progress: Progress) -> ExportResult:
    """``camp package``: rewrite the requested formats from a run folder (into ``config.out`` if set).

    The .dlpk packages the TorchScript and the STAC item describes model files beside it, so into
    a separate ``out`` those prerequisites are written too when they are not there already.
    """
    model, card = load_run_model(config.run)
    folder = Path(config.out or config.run)
    formats = set(config.formats)
    if "dlpk" in formats and not (folder / FILE_NAMES["pt"]).is_file():
        formats.add("pt")
    models = ("pt", "onnx", "pth", "dlpk")
    if "stac" in formats and not any(k in formats or (folder / FILE_NAMES[k]).is_file() for k in models):
        formats.add("pth")
    added = sorted(formats - set(config.formats))
    if added:
        progress.log(f"also writing {', '.join(added)}: needed by {', '.join(sorted(config.formats))}")
    files = export_formats(folder, model, card, tuple(formats), progress)
    return ExportResult(folder=folder, files=files)
