"""The network: a small U-Net for binary segmentation of "camp structure" pixels.

:class:`UNet` returns one channel of logits; training works on logits (numerically stable loss).
:func:`build_model` wraps it in :class:`ProbabilityModel`, whose forward returns probabilities: that
is the exported model (``best_model.pth`` is its state dict, ``best_model.pt`` its TorchScript,
``best_model.onnx`` its ONNX graph), honouring the I/O contract in :mod:`trainer.modelcard`::

    input  float32 [B, 3, H, W]  (pixels / 255 - mean) / std, H and W multiples of 2**depth
    output float32 [B, 1, H, W]  probability in [0, 1]

State dict keys of ``best_model.pth`` are those of :class:`ProbabilityModel`: ``net.`` + the UNet's
keys, e.g. ``net.down.0.block.0.weight`` (encoder level 0, first conv), ``net.up.0.weight``
(deepest transposed conv), ``net.head.weight`` (1x1 logit conv). Rebuild with
``build_model(card.architecture)`` and ``load_state_dict``.

Only ops that trace, script and export to ONNX opset 17 cleanly are used (conv, batch norm, ReLU,
max-pool, transposed conv, concat, sigmoid): no data-dependent shapes, no interpolation modes that
differ between runtimes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .errors import InputError


class DoubleConv(nn.Module):
    """(3x3 conv -> BatchNorm -> ReLU) twice; padding keeps H and W."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class UNet(nn.Module):
    """U-Net with ``depth`` down-sampling levels; channels ``base_channels * 2**level``.

    Encoder: DoubleConv per level, 2x2 max-pool between levels. Decoder: 2x2 transposed conv up,
    concatenation with the encoder's skip tensor, DoubleConv. A 1x1 conv gives one logit channel.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 16, depth: int = 4) -> None:
        super().__init__()
        self.depth = depth
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList([DoubleConv(in_channels, widths[0])])
        self.down.extend(DoubleConv(widths[i], widths[i + 1]) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        # Decoder modules are listed deepest first, the order forward() walks them.
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                for i in reversed(range(depth)))
        self.merge = nn.ModuleList(DoubleConv(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for level, block in enumerate(self.down):
            if level > 0:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):  # noqa: B905 - TorchScript zip takes no strict=
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)


class ProbabilityModel(nn.Module):
    """The exported model: the U-Net followed by a sigmoid (see the module docstring)."""

    def __init__(self, net: UNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


def architecture_of(config: Any) -> dict[str, Any]:
    """The architecture dict stored in the model card, from a TrainConfig (or any object with
    ``base_channels`` and ``depth``)."""
    return {"name": "unet", "in_channels": 3, "base_channels": int(config.base_channels),
            "depth": int(config.depth)}


def build_unet(architecture: dict[str, Any]) -> UNet:
    name = architecture.get("name", "unet")
    if name != "unet":
        raise InputError(f"unknown architecture {name!r}; this version builds 'unet' only")
    try:
        return UNet(int(architecture.get("in_channels", 3)), int(architecture["base_channels"]),
                    int(architecture["depth"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"architecture {architecture!r} lacks a valid {exc}; expected "
                         "{'name': 'unet', 'in_channels': 3, 'base_channels': N, 'depth': D}") from exc


def build_model(architecture: dict[str, Any]) -> ProbabilityModel:
    """The exported model for ``architecture`` (as in ``model_card.json``), randomly initialised."""
    return ProbabilityModel(build_unet(architecture))


def size_multiple(architecture: dict[str, Any]) -> int:
    """Input height and width must be multiples of this (one halving per level)."""
    return 2 ** int(architecture["depth"])
