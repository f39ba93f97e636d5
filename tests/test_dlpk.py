"""The .dlpk of the trained Kampala run, driven exactly as ArcGIS Pro drives it.

The raster function is imported by path from the unzipped package (ArcGIS has no `trainer`
package), fed uint8 blocks cut from real Kampala imagery, and compared with the packaged
TorchScript model run directly on the same normalised pixels.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from trainer.modelcard import ModelCard

pytestmark = pytest.mark.sample_data

ARCGIS_PYTHON_IMPORTS = {"json", "math", "os", "numpy", "torch"}


@pytest.fixture(scope="module")
def package(trained_run: Path, tmp_path_factory) -> Path:
    """The trained run's .dlpk, unzipped as ArcGIS does."""
    folder = tmp_path_factory.mktemp("dlpk")
    with zipfile.ZipFile(trained_run / "best_model.dlpk") as archive:
        archive.extractall(folder)
    return folder


@pytest.fixture(scope="module")
def card(trained_run: Path) -> ModelCard:
    return ModelCard.read(trained_run)


@pytest.fixture(scope="module")
def segmenter_class(package: Path):
    spec = importlib.util.spec_from_file_location("CampSegmenter", package / "CampSegmenter.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CampSegmenter


@pytest.fixture(scope="module")
def scene(kampala) -> np.ndarray:
    """A 3 x 3 block of neighbouring real Kampala tiles stitched into one (3, 768, 768) uint8 image."""
    from PIL import Image

    tiles = {(t.x, t.y): t for t in kampala.tiles}
    x0, y0 = min(tiles)[0], min(t.y for t in kampala.tiles)
    rows = []
    for dy in range(3):
        row = [np.asarray(Image.open(kampala.tiles_dir / "21" / str(x0 + dx) / f"{y0 + dy}.png").convert("RGB"))
               for dx in range(3)]
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0).transpose(2, 0, 1).copy()


@pytest.fixture(scope="module")
def torchscript(package: Path):
    import torch

    return torch.jit.load(str(package / "best_model.pt"), map_location="cpu").eval()


def reference_mask(torchscript, card: ModelCard, block: np.ndarray, padding: int, threshold: float,
                   tile: int | None = None) -> np.ndarray:
    """The model's own answer: TorchScript on the normalised block, padding cropped, thresholded.

    With ``tile``, the block is cut into independent tile x tile model inputs (one batch), which
    is what a function without padding must reproduce; else the whole block is one input.
    """
    import torch

    mean = np.asarray(card.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(card.std, dtype=np.float32).reshape(-1, 1, 1)
    x = ((block.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
    if tile is None:
        with torch.no_grad():
            prob = torchscript(torch.from_numpy(x[None])).numpy()[0, 0]
    else:
        rows, cols = x.shape[1] // tile, x.shape[2] // tile
        windows = x.reshape(3, rows, tile, cols, tile).transpose(1, 3, 0, 2, 4).reshape(-1, 3, tile, tile)
        with torch.no_grad():
            out = torchscript(torch.from_numpy(np.ascontiguousarray(windows))).numpy()[:, 0]
        prob = out.reshape(rows, cols, tile, tile).transpose(0, 2, 1, 3).reshape(rows * tile, cols * tile)
    h, w = prob.shape
    return (prob[padding:h - padding, padding:w - padding] >= threshold).astype(np.uint8)


def arcgis_session(segmenter_class, model_arg: str, padding: int, batch_size: int, threshold: float,
                   raster_info: dict | None = None):
    """initialize -> getParameterInfo -> getConfiguration -> updateRasterInfo, as ArcGIS calls them."""
    function = segmenter_class()
    function.initialize(model=model_arg, device=-1)
    params = function.getParameterInfo()
    scalars = {p["name"]: p.get("value") for p in params[2:]}
    scalars.update(padding=padding, batch_size=batch_size, threshold=threshold)
    config = function.getConfiguration(**scalars)
    info = function.updateRasterInfo(raster_info=raster_info or {"bandCount": 3, "pixelType": "u1"},
                                     output_info={"bandCount": 3, "pixelType": "u1"})
    return function, config, info


def run_block(function, block: np.ndarray, config: dict) -> np.ndarray:
    shape = (1, block.shape[1] - 2 * config["padding"], block.shape[2] - 2 * config["padding"])
    out = function.updatePixels((0.0, 0.0), shape, {"pixelType": "u1"}, raster_pixels=block)
    pixels = out["output_pixels"]
    assert pixels.shape == shape and pixels.dtype == np.uint8
    assert set(np.unique(pixels)) <= {0, 1}
    return pixels[0]


def test_package_layout_and_emd(trained_run: Path, package: Path, card: ModelCard, esri_examples: Path) -> None:
    with zipfile.ZipFile(trained_run / "best_model.dlpk") as archive:
        names = set(archive.namelist())
    assert {"model.emd", "best_model.pt", "CampSegmenter.py", "model_card.json"} <= names
    assert all("/" not in name for name in names)  # everything at the root, beside the .emd
    emd = json.loads((package / "model.emd").read_text())
    assert (package / emd["ModelFile"]).is_file() and (package / emd["InferenceFunction"]).is_file()
    assert emd["Framework"] == "PyTorch" and emd["ModelType"] == "ImageClassification"
    assert emd["InferenceFunction"] == "CampSegmenter.py" and emd["ModelConfiguration"]
    assert emd["ImageHeight"] == emd["ImageWidth"] == card.tile_size
    assert emd["ExtractBands"] == [0, 1, 2] and emd["DataRange"] == [0, 255]
    assert emd["Classes"] == [{"Value": 1, "Name": "camp structure", "Color": list(card.positive_class.color)}]
    assert emd["NormalizationMean"] == pytest.approx(list(card.mean))
    assert emd["NormalizationStd"] == pytest.approx(list(card.std))
    assert emd["Threshold"] == pytest.approx(card.threshold)
    assert emd["ResolutionMeters"] == pytest.approx(card.resolution_m)
    assert 0 < 2 * emd["ModelPadding"] < card.tile_size and emd["BatchSize"] >= 1
    assert ModelCard.from_json((package / "model_card.json").read_text()) == card
    # The keys a real arcgis.learn pixel classifier's .emd has, with the same value types.
    real = json.loads((esri_examples / "arcgis_learn_unet_trained.emd").read_text())
    for key in ("Framework", "ModelConfiguration", "ModelType", "InferenceFunction", "ExtractBands",
                "Classes", "ModelFile", "ImageHeight", "ImageWidth", "ImageSpaceUsed", "IsMultispectral"):
        assert type(emd[key]) is type(real[key]), key
    assert set(emd["Classes"][0]) == set(real["Classes"][0])


def test_raster_function_imports_only_what_arcgis_has(package: Path) -> None:
    tree = ast.parse((package / "CampSegmenter.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= ARCGIS_PYTHON_IMPORTS
    assert "CampSegmenter" in {n.name for n in tree.body if isinstance(n, ast.ClassDef)}


def test_parameters_configuration_and_raster_info(segmenter_class, package: Path, card: ModelCard) -> None:
    emd = json.loads((package / "model.emd").read_text())
    function = segmenter_class()
    function.initialize(model=str(package / "model.emd"), device=-1)
    params = function.getParameterInfo()
    assert [p["name"] for p in params] == ["raster", "model", "padding", "batch_size", "threshold"]
    defaults = {p["name"]: p.get("value") for p in params}
    assert defaults["padding"] == emd["ModelPadding"] and defaults["batch_size"] == emd["BatchSize"]
    assert defaults["threshold"] == pytest.approx(card.threshold)
    for padding, batch_size, (tx, ty) in [(0, 1, (256, 256)), (32, 1, (192, 192)), (32, 4, (384, 384)),
                                          (0, 2, (512, 256))]:
        config = function.getConfiguration(padding=padding, batch_size=batch_size, threshold=0.5)
        assert (config["tx"], config["ty"], config["padding"]) == (tx, ty, padding)
        assert config["extractBands"] == (0, 1, 2) and config["fixedTileSize"] == 1
        assert config["dataRange"] == (0, 255) and config["inputMask"] is False
    import torch

    for device, expected in [(-1, "cpu"), ("", "cpu"), (0, "cuda" if torch.cuda.is_available() else "cpu")]:
        other = segmenter_class()  # ArcGIS passes device -1 (or "") for CPU, a GPU id otherwise
        other.initialize(model=str(package / "model.emd"), device=device)
        assert other.device.type == expected
        assert next(iter(other.model.parameters())).device.type == expected
    with pytest.raises(ValueError, match="padding must be from 0 to 127"):
        function.getConfiguration(padding=128, batch_size=1, threshold=0.5)
    info = function.updateRasterInfo(raster_info={"bandCount": 3, "pixelType": "u1"},
                                     output_info={"bandCount": 3, "pixelType": "u1"})["output_info"]
    assert info["bandCount"] == 1 and info["pixelType"] == "u1"
    assert info["statistics"][0]["maximum"] == 1
    table = json.loads(info["rasterAttributeTable"])
    assert [f["attributes"]["Value"] for f in table["features"]] == [1]
    assert table["features"][0]["attributes"]["Class"] == "camp structure"
    assert {f["name"] for f in table["fields"]} >= {"Value", "Class", "Red", "Green", "Blue"}


@pytest.mark.parametrize("as_json", [False, True], ids=["emd-path", "emd-json"])
@pytest.mark.parametrize("padding,batch_size", [(0, 1), (32, 1), (0, 4), (32, 4)])
def test_update_pixels_matches_the_model(segmenter_class, package, card, scene, torchscript,
                                         padding, batch_size, as_json) -> None:
    emd_path = package / "model.emd"
    if as_json:  # ArcGIS may pass the EMD's JSON text with an absolute ModelFile
        emd = json.loads(emd_path.read_text())
        emd["ModelFile"] = str(package / emd["ModelFile"])
        model_arg = json.dumps(emd)
    else:
        model_arg = str(emd_path)
    function, config, _ = arcgis_session(segmenter_class, model_arg, padding, batch_size, card.threshold)
    block = scene[:, :config["ty"] + 2 * padding, :config["tx"] + 2 * padding]
    got = run_block(function, block, config)
    if batch_size == 1 or padding == 0:
        # One window per block, or windows that share no context: the very same model inputs.
        expected = reference_mask(torchscript, card, block, padding, card.threshold, tile=card.tile_size)
        np.testing.assert_array_equal(got, expected)
    else:  # padded windows see a little less context at their seams than one whole-block pass
        expected = reference_mask(torchscript, card, block, padding, card.threshold)
        assert (got == expected).mean() >= 0.995
    assert 0.01 < got.mean() < 0.99  # real buildings and real background in the scene


def test_threshold_is_honoured_and_monotonic(segmenter_class, package, card, scene, torchscript) -> None:
    positives = []
    for threshold in (0.3, 0.5, 0.7):
        function, config, _ = arcgis_session(segmenter_class, str(package / "model.emd"), 32, 4, threshold)
        block = scene[:, :config["ty"] + 64, :config["tx"] + 64]
        got = run_block(function, block, config)
        assert (got == reference_mask(torchscript, card, block, 32, threshold)).mean() >= 0.995
        positives.append(int(got.sum()))
    assert positives[0] > positives[1] > positives[2] > 0


def test_blocks_of_another_size_than_the_model(segmenter_class, package, card, scene, torchscript) -> None:
    function, config, _ = arcgis_session(segmenter_class, str(package / "model.emd"), 32, 4, card.threshold)
    block = scene[:, :328, :520]  # not a whole number of 256 px model windows
    got = run_block(function, block, config)
    assert (got == reference_mask(torchscript, card, block, 32, card.threshold)).mean() >= 0.99


def test_sixteen_bit_and_four_band_input(segmenter_class, package, card, scene) -> None:
    block8 = scene[:, :256, :256]
    function, config, _ = arcgis_session(segmenter_class, str(package / "model.emd"), 0, 1, card.threshold)
    expected = run_block(function, block8, config)
    # 16-bit imagery: the same scene stretched over 0-65535, scaled back by the raster's statistics.
    stats = tuple({"minimum": 0.0, "maximum": 65535.0} for _ in range(3))
    function16, config16, _ = arcgis_session(segmenter_class, str(package / "model.emd"), 0, 1, card.threshold,
                                             raster_info={"bandCount": 3, "pixelType": "u2", "statistics": stats})
    got16 = run_block(function16, block8.astype(np.uint16) * 257, config16)
    assert (got16 == expected).mean() >= 0.999
    # A 4-band block (RGB + a near-infrared band): ExtractBands [0, 1, 2] picks RGB.
    nir = np.full((1, 256, 256), 200, dtype=np.uint8)
    np.testing.assert_array_equal(run_block(function, np.concatenate([block8, nir]), config), expected)
    with pytest.raises(ValueError, match="needs 3 bands"):
        run_block(function, block8[:2], config)
