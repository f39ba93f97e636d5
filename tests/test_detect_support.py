"""Helpers for the detect tests (no tests here): a fixed, fully convolutional stand-in model
exported through the product's own export functions, and real GeoTIFFs built from the Kampala tiles.

The stand-in responds to red-brown pixels (Kampala's metal and tile roofs) with two 5x5 box
filters, so it has a 9-pixel receptive field: window borders, where it sees zero padding, differ
from the same pixels seen from inside a window, which is what the seam tests need.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

STANDIN_TILE = 64
STANDIN_MEAN = (0.45, 0.45, 0.45)
STANDIN_STD = (0.25, 0.25, 0.25)


def standin_module():  # noqa: ANN201
    import torch
    from torch import nn

    class ColourNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.redness = nn.Conv2d(3, 1, 5, padding=2)
            self.smooth = nn.Conv2d(1, 1, 5, padding=2)
            with torch.no_grad():
                self.redness.weight.zero_()
                self.redness.weight[0, 0] = 1.0 / 25
                self.redness.weight[0, 1] = -0.5 / 25
                self.redness.weight[0, 2] = -0.5 / 25
                self.redness.bias.fill_(0.0)
                self.smooth.weight.fill_(1.0 / 25)
                self.smooth.bias.fill_(-0.15)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(8.0 * self.smooth(self.redness(x)))

    return ColourNet().eval()


def standin_card(tile: int = STANDIN_TILE, resolution_m: float | None = None, zoom: int | None = 21,
                 threshold: float = 0.5):  # noqa: ANN201
    from trainer.modelcard import ModelCard

    return ModelCard(name="colour stand-in", architecture={"name": "colournet", "in_channels": 3},
                     mean=STANDIN_MEAN, std=STANDIN_STD, tile_size=tile, threshold=threshold,
                     resolution_m=resolution_m, zoom=zoom)


def write_standin_run(folder: Path, **card_args) -> Path:  # noqa: ANN003
    """A run folder with best_model.onnx, best_model.pt, best_model.dlpk and model_card.json."""
    from trainer.export.dlpk import write_dlpk
    from trainer.export.torch_formats import save_onnx, save_torchscript

    folder.mkdir(parents=True, exist_ok=True)
    card = standin_card(**card_args)
    module = standin_module()
    card.write(folder / "model_card.json")
    save_torchscript(module, card, folder / "best_model.pt")
    save_onnx(module, card, folder / "best_model.onnx")
    write_dlpk(folder, card)
    return folder


def kampala_mosaic(kampala, path: Path, crop: tuple[int, int, int, int] | None = None) -> Path:  # noqa: ANN001
    """Stitch the Kampala zoom-21 PNG tiles into one EPSG:3857 RGB GeoTIFF with the tile transform.

    ``crop`` = (row, col, height, width) keeps a pixel window of the full mosaic.
    """
    from PIL import Image

    from trainer.tiling import TILE_SIZE, Tile

    xs = [t.x for t in kampala.tiles]
    ys = [t.y for t in kampala.tiles]
    x0, y0 = min(xs), min(ys)
    rgb = np.zeros((3, (max(ys) - y0 + 1) * TILE_SIZE, (max(xs) - x0 + 1) * TILE_SIZE), dtype=np.uint8)
    for t in kampala.tiles:
        with Image.open(kampala.tiles_dir / str(t.z) / str(t.x) / f"{t.y}.png") as img:
            pixels = np.asarray(img.convert("RGB"))
        r, c = (t.y - y0) * TILE_SIZE, (t.x - x0) * TILE_SIZE
        rgb[:, r:r + TILE_SIZE, c:c + TILE_SIZE] = pixels.transpose(2, 0, 1)
    transform = Tile(x0, y0, kampala.zoom).transform()
    if crop is not None:
        row, col, height, width = crop
        rgb = rgb[:, row:row + height, col:col + width]
        transform = transform @ transform.translation(col, row)
    write_geotiff(path, rgb, transform, "EPSG:3857")
    return path


def write_geotiff(path: Path, data: np.ndarray, transform, crs, nodata=None, **extra) -> Path:  # noqa: ANN001, ANN003
    import rasterio

    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "transform": transform, "crs": crs, "tiled": True,
               "blockxsize": 256, "blockysize": 256, "nodata": nodata, **extra}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def read_probability(path: Path) -> np.ma.MaskedArray:
    """probability.tif as a masked float array in 0..1, whatever its encoding."""
    import rasterio

    with rasterio.open(path) as src:
        data = src.read(1, masked=True)
    if data.dtype == np.uint8:
        return data.astype(np.float32) / 255.0
    return data
