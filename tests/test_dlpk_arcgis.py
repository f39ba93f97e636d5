"""The trained .dlpk run over a whole raster the way ArcGIS Pro's "Classify Pixels Using Deep
Learning" does it, compared with `camp detect` on the same raster.

Pro unzips the package, loads the raster function named in the .emd by path, asks it for its
block layout (getConfiguration: tx, ty, padding) and then walks the raster in blocks of
tx x ty output pixels, handing updatePixels each block with `padding` pixels of context from the
neighbouring blocks (NoData, i.e. 0, beyond the raster's edge). tests/test_dlpk.py checks the
function's contract on single blocks; this file checks the whole-raster result.

The two paths do not blend identically: Pro keeps each window's centre and drops its padding,
detect blends overlapping windows with a taper and reflects at the raster's edge. So the masks
agree on almost every pixel but not all; the tests require at least 97% agreement, and that
both masks find a real share of buildings (agreement on an empty mask would prove nothing).
"""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.sample_data

AGREEMENT = 0.97
CROP = (300, 700, 1100, 1500)  # row, col, height, width in the 2048 x 3072 px mosaic


@pytest.fixture(scope="module")
def mosaic(kampala, tmp_path_factory) -> Path:
    """A 1100 x 1500 px window of the Kampala zoom-21 mosaic (EPSG:3857 GeoTIFF). Its size is no
    multiple of any block size, so the last row and column of blocks reach past the edge."""
    from test_detect_support import kampala_mosaic

    return kampala_mosaic(kampala, tmp_path_factory.mktemp("dlpk-arcgis") / "kampala.tif", crop=CROP)


@pytest.fixture(scope="module")
def pixels(mosaic: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(mosaic) as src:
        return src.read()


@pytest.fixture(scope="module")
def unpacked(trained_run: Path, tmp_path_factory) -> Path:
    """best_model.dlpk extracted as Pro does before loading it; returns the .emd path."""
    folder = tmp_path_factory.mktemp("dlpk-unpacked")
    with zipfile.ZipFile(trained_run / "best_model.dlpk") as archive:
        archive.extractall(folder)
    emds = list(folder.glob("*.emd"))
    assert len(emds) == 1, emds
    return emds[0]


@pytest.fixture(scope="module")
def detection(trained_run: Path, mosaic: Path, tmp_path_factory) -> dict[str, np.ndarray]:
    """`camp detect` with the same .dlpk on the same raster: mask.tif and the float probability."""
    import rasterio

    from trainer.config import DetectConfig
    from trainer.jobs import run_job

    out = tmp_path_factory.mktemp("dlpk-detect") / "detect"
    result = run_job("detect", DetectConfig(model=str(trained_run / "best_model.dlpk"), imagery=str(mosaic),
                                            out=out, probability_dtype="float32"))
    with rasterio.open(result.mask) as src, rasterio.open(mosaic) as ref:
        assert (src.width, src.height, src.transform) == (ref.width, ref.height, ref.transform)
        mask = src.read(1)
    with rasterio.open(result.probability) as src:
        probability = src.read(1)
    return {"mask": mask, "probability": probability, "threshold": np.float32(result.threshold)}


def load_function(emd: Path):
    """Import the .emd's InferenceFunction by path (Pro's Python has no `trainer` package)."""
    name = json.loads(emd.read_text())["InferenceFunction"]
    path = emd.parent / name
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, path.stem)()


def classify_pixels(emd: Path, pixels: np.ndarray, **arguments: str) -> tuple[np.ndarray, dict]:
    """What Classify Pixels Using Deep Learning does with the package over a whole raster.

    ``arguments`` are the tool's "Arguments" (padding, batch_size, threshold), passed as the
    strings Pro passes.
    """
    function = load_function(emd)
    function.initialize(model=str(emd), device=-1)
    info = function.getParameterInfo()
    assert [p["name"] for p in info[:2]] == ["raster", "model"]
    scalars = {p["name"]: str(p["value"]) for p in info[2:]}
    scalars.update(arguments)
    config = function.getConfiguration(**scalars)
    raster_info = {"bandCount": pixels.shape[0], "pixelType": "u1", "nativeExtent": None}
    output = function.updateRasterInfo(raster_info=raster_info, output_info={})["output_info"]
    assert (output["bandCount"], output["pixelType"]) == (1, "u1")

    bands, height, width = pixels.shape
    tx, ty, pad = config["tx"], config["ty"], config["padding"]
    assert config["fixedTileSize"] == 1
    pixels = pixels[list(config["extractBands"])]
    # Beyond the raster's edge Pro hands NoData, which reads as 0 in the block.
    padded = np.zeros((len(config["extractBands"]), height + ty + 2 * pad, width + tx + 2 * pad), np.uint8)
    padded[:, pad:pad + height, pad:pad + width] = pixels
    mask = np.zeros((height, width), np.uint8)
    for row in range(0, height, ty):
        for col in range(0, width, tx):
            block = padded[:, row:row + ty + 2 * pad, col:col + tx + 2 * pad]
            shape = (1, ty, tx)
            out = function.updatePixels((col, row), shape, {"pixelType": "u1"}, raster_pixels=block.copy())
            result = out["output_pixels"]
            assert result.shape == shape and result.dtype == np.uint8
            keep_h, keep_w = min(ty, height - row), min(tx, width - col)
            mask[row:row + keep_h, col:col + keep_w] = result[0, :keep_h, :keep_w]
    return mask, config


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.astype(bool) == b.astype(bool)).mean())


def test_default_arguments_agree_with_camp_detect(unpacked, pixels, detection):
    """The .emd's own padding and batch size (a block is a 2 x 2 grid of model windows)."""
    mask, config = classify_pixels(unpacked, pixels)
    emd = json.loads(unpacked.read_text())
    assert config["padding"] == emd["ModelPadding"] > 0
    assert (config["tx"], config["ty"]) != (emd["ImageWidth"], emd["ImageHeight"])  # batch > 1 per block
    positive = mask.mean()
    assert 0.02 < positive < 0.9 and 0.02 < detection["mask"].astype(bool).mean() < 0.9
    assert agreement(mask, detection["mask"]) >= AGREEMENT


@pytest.mark.parametrize("padding, batch_size", [("0", "1"), ("16", "2")])
def test_other_padding_and_batch_sizes_agree(unpacked, pixels, detection, padding, batch_size):
    mask, config = classify_pixels(unpacked, pixels, padding=padding, batch_size=batch_size)
    tile = json.loads(unpacked.read_text())["ImageWidth"]
    assert config["padding"] == int(padding)
    assert config["tx"] * config["ty"] == int(batch_size) * (tile - 2 * int(padding)) ** 2
    assert agreement(mask, detection["mask"]) >= AGREEMENT


def test_threshold_argument_matches_detect_at_that_threshold(unpacked, pixels, detection):
    """A lower threshold in Pro vs detect's probability >= that threshold: the same pixels, and more
    of them than at the model's own threshold."""
    threshold = round(max(0.05, float(detection["threshold"]) - 0.2), 2)
    mask, _ = classify_pixels(unpacked, pixels, threshold=str(threshold))
    reference = detection["probability"] >= np.float32(threshold)
    assert agreement(mask, reference) >= AGREEMENT
    assert mask.sum() > detection["mask"].astype(bool).sum()
