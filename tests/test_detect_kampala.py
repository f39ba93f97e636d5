"""camp detect with the session's trained U-Net on the real Kampala imagery: it finds the buildings
(evaluated against the OSM footprints), and every way of running it gives the same probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from test_detect_support import kampala_mosaic, read_probability

from trainer.config import DetectConfig, EvaluateConfig
from trainer.detect import run_detect
from trainer.evaluate import run_evaluate
from trainer.modelcard import ModelCard
from trainer.progress import NullProgress

pytestmark = [pytest.mark.sample_data, pytest.mark.slow]


@pytest.fixture(scope="module")
def mosaic(kampala, tmp_path_factory) -> Path:
    return kampala_mosaic(kampala, tmp_path_factory.mktemp("kampala-mosaic") / "kampala.tif")


@pytest.fixture(scope="module")
def detection(trained_run: Path, mosaic: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kampala-detect") / "det"
    run_detect(DetectConfig(model=str(trained_run), imagery=str(mosaic), out=out), NullProgress())
    return out


def _with_mask(folder: Path, source: Path, mask: np.ndarray) -> Path:
    """A copy of a detect folder whose mask is replaced (baselines for the IoU)."""
    folder.mkdir()
    with rasterio.open(source / "mask.tif") as src:
        profile = {**src.profile, "driver": "GTiff"}
    with rasterio.open(folder / "mask.tif", "w", **profile) as dst:
        dst.write(mask, 1)
    return folder


def test_trained_model_finds_the_buildings(trained_run: Path, detection: Path, kampala, tmp_path: Path) -> None:
    import pyogrio

    card = ModelCard.read(trained_run)
    summary = json.loads((detection / "summary.json").read_text())
    assert summary["threshold"] == card.threshold and summary["backend"] == "onnx"
    assert summary["work_grid"]["resampled"] is False  # the mosaic is at the training resolution
    with rasterio.open(detection / "probability.tif") as src:
        assert src.overviews(1) and src.profile["tiled"] and src.crs.to_epsg() == 3857
    result = run_evaluate(EvaluateConfig(prediction=detection, labels=str(kampala.labels)), NullProgress())
    iou = result.pixel["iou"]
    with rasterio.open(detection / "mask.tif") as src:
        mask = src.read(1)
    rng = np.random.default_rng(0)
    baselines = {
        "all zero": np.zeros_like(mask),
        "all one": np.ones_like(mask),
        # The same mask with its 256-px blocks shuffled: same amount of "building", wrong places.
        "shuffled": _shuffle_blocks(mask, 256, rng),
    }
    scores = {}
    for name, fake in baselines.items():
        folder = _with_mask(tmp_path / name.replace(" ", "_"), detection, fake)
        scores[name] = run_evaluate(EvaluateConfig(prediction=folder, labels=str(kampala.labels)),
                                    NullProgress()).pixel["iou"]
    print(f"pixel IoU {iou:.3f}, mean IoU {result.pixel['mean_iou']:.3f}; baselines {scores}")
    assert iou > 0.3
    assert iou > 1.5 * max(scores.values())
    assert result.objects["matched"] > 0
    _, _, geometry, fields = pyogrio.raw.read(detection / "footprints.gpkg")
    assert len(geometry) == summary["footprints"] > 10
    assert (fields[1] >= 2.0).all()  # min_area_m2 default


def _shuffle_blocks(mask: np.ndarray, block: int, rng: np.random.Generator) -> np.ndarray:
    h, w = mask.shape
    blocks = [mask[r:r + block, c:c + block] for r in range(0, h, block) for c in range(0, w, block)]
    order = rng.permutation(len(blocks))
    out = np.empty_like(mask)
    per_row = w // block
    for k, index in enumerate(order):
        r, c = divmod(k, per_row)
        out[r * block:(r + 1) * block, c * block:(c + 1) * block] = blocks[index]
    return out


def test_xyz_extent_matches_the_mosaic(trained_run: Path, detection: Path, kampala, tile_server,
                                       tmp_path: Path) -> None:
    out = tmp_path / "xyz"
    run_detect(DetectConfig(model=str(trained_run), imagery=tile_server.template, bbox=kampala.bbox, out=out),
               NullProgress())
    with rasterio.open(out / "probability.tif") as a, rasterio.open(detection / "probability.tif") as b:
        assert a.crs == b.crs and a.shape == b.shape and a.transform.almost_equals(b.transform)
    diff = np.abs(read_probability(out / "probability.tif") - read_probability(detection / "probability.tif"))
    assert diff.max() <= 1 / 255 + 1e-6


def test_onnx_torchscript_and_dlpk_agree(trained_run: Path, mosaic: Path, tmp_path: Path) -> None:
    from rasterio.windows import Window

    # A 700 x 900 window of the mosaic keeps this quick while crossing several window borders.
    with rasterio.open(mosaic) as src:
        crop = tmp_path / "crop.tif"
        profile = {**src.profile, "width": 900, "height": 700, "transform": src.window_transform(Window(500, 300, 900, 700))}
        with rasterio.open(crop, "w", **profile) as dst:
            dst.write(src.read(window=Window(500, 300, 900, 700)))
    results = {}
    for name, model, backend in [("onnx", trained_run, "onnx"), ("torch", trained_run, "torch"),
                                 ("dlpk", trained_run / "best_model.dlpk", "auto")]:
        r = run_detect(DetectConfig(model=str(model), imagery=str(crop), out=tmp_path / name, backend=backend,
                                    probability_dtype="float32"), NullProgress())
        assert r.backend == ("onnx" if name == "onnx" else "torch")
        results[name] = read_probability(r.probability)
    assert np.abs(results["onnx"] - results["torch"]).max() < 1e-3
    assert np.abs(results["dlpk"] - results["torch"]).max() < 1e-5
