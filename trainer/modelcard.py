"""The model card: everything a trained model says about itself.

One JSON document written beside the weights (``model_card.json``) and embedded in every export
(ONNX metadata, TorchScript extra files, the .dlpk), so detect, the QGIS plugin, ArcGIS and the
STAC item never ask the user to re-enter tile size, bands, normalisation or threshold.

Output contract, the same for ``best_model.pth`` (state dict of :func:`trainer.model.build_model`),
``best_model.pt`` (TorchScript) and ``best_model.onnx``:

    input  float32 [B, 3, H, W]: RGB pixels / 255, then (x - mean) / std per band (card values)
    output float32 [B, 1, H, W]: probability in [0, 1] that the pixel is a "camp structure"

A pixel belongs to the class where probability >= ``threshold`` (chosen on validation data).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

CARD_FILENAME = "model_card.json"
CARD_VERSION = 1
CLASS_NAME = "camp structure"


@dataclass(frozen=True)
class ModelClass:
    value: int
    name: str
    color: tuple[int, int, int]


DEFAULT_CLASSES = (
    ModelClass(0, "background", (0, 0, 0)),
    ModelClass(1, CLASS_NAME, (230, 85, 13)),
)


@dataclass(frozen=True)
class ModelCard:
    name: str
    architecture: dict[str, Any]  # {"name": "unet", "in_channels": 3, "base_channels": 16, "depth": 4}
    mean: tuple[float, ...]  # per band, on the 0-1 pixel scale
    std: tuple[float, ...]
    tile_size: int = 256
    bands: tuple[str, ...] = ("red", "green", "blue")
    threshold: float = 0.5
    resolution_m: float | None = None  # ground metres per pixel of the training chips
    zoom: int | None = None
    crs: str = "EPSG:3857"
    bbox: tuple[float, float, float, float] | None = None  # training extent, lon/lat
    classes: tuple[ModelClass, ...] = DEFAULT_CLASSES
    metrics: dict[str, float] = field(default_factory=dict)  # test-split metrics
    training: dict[str, Any] = field(default_factory=dict)  # hyperparameters, dataset, system
    created: str = ""
    version: str = ""  # product version that wrote the card
    card_version: int = CARD_VERSION

    @property
    def in_channels(self) -> int:
        return len(self.bands)

    @property
    def positive_class(self) -> ModelClass:
        return self.classes[-1]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = [asdict(c) for c in self.classes]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        try:
            data = dict(data)
            data["classes"] = tuple(ModelClass(int(c["value"]), str(c["name"]), tuple(c["color"]))
                                    for c in data.get("classes", [asdict(c) for c in DEFAULT_CLASSES]))
            for key in ("mean", "std", "bands"):
                data[key] = tuple(data[key]) if key in data else getattr(cls, key, None)
            if data.get("bbox") is not None:
                data["bbox"] = tuple(data["bbox"])
            known = set(cls.__dataclass_fields__)
            return cls(**{k: v for k, v in data.items() if k in known})
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"model card is incomplete or malformed ({exc}); re-export the model") from exc

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"model card is not valid JSON: {exc}") from exc

    @classmethod
    def read(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        if path.is_dir():
            path = path / CARD_FILENAME
        if not path.is_file():
            raise ModelLoadError(f"no {CARD_FILENAME} at {path}; is this a camp run folder?")
        return cls.from_json(path.read_text(encoding="utf-8"))

    def write(self, path: str | Path) -> Path:
        from .fileio import write_text

        return write_text(path, self.to_json() + "\n")
