"""camp detect on real Kampala imagery with a fixed, fully convolutional stand-in model.

The stand-in (tests/test_detect_support.py) is exported through the product's own ONNX/TorchScript
/DLPK writers, so these tests run without a trained model; tests/test_detect_kampala.py repeats
the important ones with the session's trained U-Net.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from test_detect_support import (
    STANDIN_TILE,
    kampala_mosaic,
    read_probability,
    standin_module,
    write_geotiff,
    write_standin_run,
)

from trainer.config import DetectConfig
from trainer.detect import run_detect
from trainer.errors import Cancelled, InputError, OutputExistsError, OutputNotWritableError, TileFetchError
from trainer.progress import NullProgress, RecordingProgress

ROOT = Path(__file__).resolve().parents[1]
CROP = (300, 500, 700, 900)  # rows, cols, height, width of the mosaic: 2 strips+ of windows, odd sizes


@pytest.fixture(scope="module")
def standin_run(tmp_path_factory) -> Path:
    return write_standin_run(tmp_path_factory.mktemp("standin") / "run")


@pytest.fixture(scope="module")
def mosaic(kampala, tmp_path_factory) -> Path:
    return kampala_mosaic(kampala, tmp_path_factory.mktemp("mosaic") / "kampala_crop.tif", crop=CROP)


def detect(model: Path, imagery: Path | str, out: Path, **options) -> object:  # noqa: ANN003
    options.setdefault("probability_dtype", "float32")
    return run_detect(DetectConfig(model=str(model), imagery=str(imagery), out=out, **options), NullProgress())


def full_forward(path: Path) -> np.ndarray:
    """One forward pass of the stand-in over the whole raster (no windows): the seam-free truth."""
    import torch

    with rasterio.open(path) as src:
        rgb = src.read([1, 2, 3]).astype(np.float32)
    x = (rgb[None] / 255.0 - 0.45) / 0.25
    with torch.no_grad():
        return standin_module()(torch.from_numpy(x)).numpy()[0, 0]


@pytest.mark.sample_data
def test_detect_raster_writes_georeferenced_layers(standin_run: Path, mosaic: Path, tmp_path: Path) -> None:
    import pyogrio
    from rasterio.features import shapes

    progress = RecordingProgress()
    result = run_detect(DetectConfig(model=str(standin_run), imagery=str(mosaic), out=tmp_path / "det",
                                     probability_dtype="float32", simplify_m=0, min_area_m2=0), progress)
    with rasterio.open(mosaic) as src:
        grid = (src.crs, src.transform, src.width, src.height)
    for name in ("probability.tif", "mask.tif"):
        with rasterio.open(tmp_path / "det" / name) as out:
            assert (out.crs, out.transform, out.width, out.height) == grid
            assert out.profile["tiled"] and out.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert out.overviews(1), f"{name} has no overviews"
    probability = read_probability(result.probability)
    # Seams: windows of 64 px with 25% overlap blend to what one forward over the whole raster gives.
    truth = full_forward(mosaic)
    assert np.abs(probability - truth).max() < 0.02
    assert probability.std() > 0.05  # the stand-in responds to the imagery
    with rasterio.open(result.mask) as src:
        mask = src.read(1)
    np.testing.assert_array_equal(mask, (probability >= 0.5).astype(np.uint8))
    # Footprints: one polygon per 4-connected component of the mask, whole across strip borders.
    components = sum(1 for _, v in shapes(mask, mask=mask == 1, connectivity=4) if v == 1)
    meta, _, geometry, fields = pyogrio.raw.read(result.footprints)
    assert len(geometry) == result.footprint_count == components > 5
    assert meta["fields"].tolist() == ["id", "area_m2", "mean_probability"]
    area, mean_prob = fields[1], fields[2]
    pixel_m2 = json.loads(result.summary_path.read_text())["grid"]["ground_resolution_m"] ** 2
    assert abs(area.sum() - mask.sum() * pixel_m2) < 0.01 * area.sum()  # true ground m2, not Mercator m2
    assert mean_prob.min() >= 0.5 and mean_prob.max() <= 1.0
    summary = json.loads(result.summary_path.read_text())
    assert summary["footprints"] == components and summary["pixels"]["positive"] == int(mask.sum())
    assert summary["backend"] == "onnx" and summary["grid"]["crs"] == "EPSG:3857"
    assert set(summary["timings_s"]) >= {"read", "model", "blend_write", "vectorize", "cog", "total"}
    assert progress.events[-1][0] == 1.0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging left behind"


@pytest.mark.sample_data
def test_overlap_and_backend_do_not_change_the_answer(standin_run: Path, mosaic: Path, tmp_path: Path) -> None:
    truth = full_forward(mosaic)
    b = read_probability(detect(standin_run, mosaic, tmp_path / "b", overlap=0.5, batch_size=3,
                                backend="torch").probability)
    c = read_probability(detect(standin_run / "best_model.dlpk", mosaic, tmp_path / "c").probability)
    assert np.abs(b - truth).max() < 0.01 and np.abs(c - truth).max() < 0.02


@pytest.mark.sample_data
def test_uint8_probability_and_thresholds(standin_run: Path, mosaic: Path, tmp_path: Path) -> None:
    f = read_probability(detect(standin_run, mosaic, tmp_path / "f").probability)
    r = detect(standin_run, mosaic, tmp_path / "u", probability_dtype="uint8", threshold=0.3)
    with rasterio.open(r.probability) as src:
        assert src.dtypes[0] == "uint8" and src.nodata == 255
    assert np.abs(read_probability(r.probability) - f).max() <= 1 / 255 + 1e-6
    with rasterio.open(r.mask) as src:
        assert src.read(1).sum() == int((f >= 0.3).sum()) == r.positive_pixels
    assert r.threshold == 0.3


@pytest.mark.sample_data
def test_uint16_and_band_selection_give_the_rgb_answer(standin_run: Path, mosaic: Path, tmp_path: Path) -> None:
    with rasterio.open(mosaic) as src:
        rgb, transform, crs = src.read(), src.transform, src.crs
    expected = read_probability(detect(standin_run, mosaic, tmp_path / "rgb").probability)
    wide = write_geotiff(tmp_path / "u16.tif", rgb.astype(np.uint16) * 257, transform, crs)
    got = read_probability(detect(standin_run, wide, tmp_path / "u16").probability)
    assert np.abs(got - expected).max() < 0.01
    # Band 1 is something else (e.g. NIR); bands 4,3,2 are R,G,B.
    noise = np.random.default_rng(0).integers(0, 256, rgb.shape[1:], dtype=np.uint8)
    four = write_geotiff(tmp_path / "nbgr.tif", np.stack([noise, rgb[2], rgb[1], rgb[0]]), transform, crs)
    got = read_probability(detect(standin_run, four, tmp_path / "4b", bands=(4, 3, 2)).probability)
    assert np.abs(got - expected).max() < 1e-5
    wrong = read_probability(detect(standin_run, four, tmp_path / "4w").probability)
    assert np.abs(wrong - expected).max() > 0.1  # so the selection above really mattered


@pytest.mark.sample_data
def test_nodata_in_input_is_nodata_in_outputs(standin_run: Path, mosaic: Path, tmp_path: Path) -> None:
    with rasterio.open(mosaic) as src:
        rgb, transform, crs = src.read(), src.transform, src.crs
    rgb = rgb.copy()
    rgb[rgb == 0] = 1  # keep 0 for nodata only
    rgb[:, 100:300, 200:450] = 0
    holed = write_geotiff(tmp_path / "holed.tif", rgb, transform, crs, nodata=0)
    for dtype in ("float32", "uint8"):
        r = detect(standin_run, holed, tmp_path / dtype, probability_dtype=dtype)
        probability = read_probability(r.probability)
        assert probability.mask[100:300, 200:450].all()
        assert not probability.mask[:100].any() and not probability.mask[300:].any()
        with rasterio.open(r.mask) as src:
            mask = src.read(1)
            assert src.nodata == 255 and (mask[100:300, 200:450] == 255).all()
        assert r.valid_pixels == rgb.shape[1] * rgb.shape[2] - 200 * 250


@pytest.mark.sample_data
def test_raster_in_utm_lands_on_its_own_grid(standin_run: Path, mosaic: Path, tmp_path: Path) -> None:
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    with rasterio.open(mosaic) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:32636", src.width, src.height,
                                                               *src.bounds)
        data = np.zeros((3, height, width), dtype=np.uint8)
        reproject(rasterio.band(src, [1, 2, 3]), data, dst_transform=transform, dst_crs="EPSG:32636",
                  resampling=Resampling.bilinear)
    utm = write_geotiff(tmp_path / "utm.tif", data, transform, "EPSG:32636")
    r = detect(standin_run, utm, tmp_path / "utm_out")
    with rasterio.open(r.probability) as out:
        assert out.crs.to_epsg() == 32636
        assert (out.transform, out.width, out.height) == (transform, width, height)
    summary = json.loads(r.summary_path.read_text())
    assert summary["work_grid"]["resampled"] is False  # same ground resolution as the model
    assert summary["grid"]["crs"] == "EPSG:32636"
    assert r.footprint_count > 0


@pytest.mark.sample_data
def test_input_of_another_resolution_is_resampled_and_written_back(mosaic: Path, tmp_path: Path) -> None:
    """A model trained at twice the pixel size runs on a coarsened copy; outputs keep the input grid."""
    from trainer.detect import Grid, ground_resolution

    with rasterio.open(mosaic) as src:
        grid = Grid(src.crs, src.transform, src.width, src.height)
    input_res = ground_resolution(grid)
    coarse_run = write_standin_run(tmp_path / "coarse_run", resolution_m=2 * input_res)
    r = detect(coarse_run, mosaic, tmp_path / "out")
    summary = json.loads(r.summary_path.read_text())
    assert summary["work_grid"]["resampled"] is True
    assert summary["work_grid"]["width"] == round(grid.width / 2)
    with rasterio.open(r.probability) as out:
        assert (out.transform, out.width, out.height) == (grid.transform, grid.width, grid.height)
    resampled = read_probability(r.probability)
    direct = read_probability(detect(coarse_run, mosaic, tmp_path / "direct", resample=False).probability)
    assert resampled.count() == direct.count()  # no holes from the round trip
    assert np.corrcoef(resampled.ravel(), direct.ravel())[0, 1] > 0.8
    assert not np.allclose(resampled, direct, atol=0.01)  # it really ran at another resolution


@pytest.mark.sample_data
def test_xyz_extent_equals_the_mosaic(standin_run: Path, kampala, tile_server, tmp_path: Path) -> None:
    """Detect straight on an XYZ extent = detect on the stitched mosaic of the same tiles."""
    from trainer.tiling import Tile

    xs = sorted({t.x for t in kampala.tiles})
    ys = sorted({t.y for t in kampala.tiles})
    nw, se = Tile(xs[2], ys[1], kampala.zoom), Tile(xs[5], ys[3], kampala.zoom)
    eps = 1e-7
    bbox = (nw.bounds_lonlat[0] + eps, se.bounds_lonlat[1] + eps, se.bounds_lonlat[2] - eps, nw.bounds_lonlat[3] - eps)
    full = kampala_mosaic(kampala, tmp_path / "full.tif")
    from_mosaic = detect(standin_run, full, tmp_path / "m", bbox=bbox)
    from_xyz = detect(standin_run, tile_server.template, tmp_path / "x", bbox=bbox)
    with rasterio.open(from_mosaic.probability) as a, rasterio.open(from_xyz.probability) as b:
        assert a.crs == b.crs and a.transform.almost_equals(b.transform) and a.shape == b.shape == (3 * 256, 4 * 256)
    np.testing.assert_allclose(read_probability(from_xyz.probability), read_probability(from_mosaic.probability),
                               atol=1e-5)
    assert tile_server.tile_requests == 12
    summary = json.loads(from_xyz.summary_path.read_text())
    assert summary["input"]["kind"] == "xyz" and summary["input"]["zoom"] == 21


# ---------------------------------------------------------------- bad input and cancel

@pytest.mark.sample_data
def test_bad_rasters_are_refused_with_the_fix(standin_run: Path, mosaic: Path, tmp_path: Path) -> None:
    with rasterio.open(mosaic) as src:
        rgb, transform, crs = src.read(), src.transform, src.crs
    grey = write_geotiff(tmp_path / "grey.tif", rgb[:1], transform, crs)
    with pytest.raises(InputError, match=r"takes 3 bands \(red, green, blue\) but .*grey.tif has 1.*--bands 1,1,1"):
        detect(standin_run, grey, tmp_path / "o1")
    plain = tmp_path / "nocrs.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=100, height=100, count=3, dtype="uint8") as dst:
        dst.write(rgb[:, :100, :100])
    with pytest.raises(InputError, match="has no CRS"):
        detect(standin_run, plain, tmp_path / "o2")
    with pytest.raises(InputError, match="does not overlap"):
        detect(standin_run, mosaic, tmp_path / "o3", bbox=(10.0, 10.0, 10.001, 10.001))
    with pytest.raises(InputError, match="selects 2"):
        detect(standin_run, mosaic, tmp_path / "o4", bands=(1, 2))
    with pytest.raises(InputError, match="does not exist"):
        detect(standin_run, tmp_path / "missing.tif", tmp_path / "o5")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))


@pytest.mark.sample_data
def test_outputs_are_guarded(standin_run: Path, mosaic: Path, tmp_path: Path) -> None:
    first = detect(standin_run, mosaic, tmp_path / "det")
    stamp = first.probability.stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="--overwrite"):
        detect(standin_run, mosaic, tmp_path / "det")
    assert first.probability.stat().st_mtime_ns == stamp
    detect(standin_run, mosaic, tmp_path / "det", overwrite=True, threshold=0.9)
    assert json.loads((tmp_path / "det" / "summary.json").read_text())["threshold"] == 0.9
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputNotWritableError, match="cannot write to output folder"):
        detect(standin_run, mosaic, blocker / "det")


@pytest.mark.sample_data
def test_empty_xyz_extent(standin_run: Path, tile_server, tmp_path: Path) -> None:
    with pytest.raises(TileFetchError, match="no imagery tiles for the extent"):
        detect(standin_run, tile_server.template, tmp_path / "o", bbox=(10.0, 10.0, 10.0005, 10.0005))
    with pytest.raises(InputError, match="needs an extent"):
        detect(standin_run, tile_server.template, tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.sample_data
def test_cancel_leaves_no_outputs_and_keeps_old_ones(standin_run: Path, mosaic: Path, tmp_path: Path) -> None:
    old = detect(standin_run, mosaic, tmp_path / "det")
    before = old.summary_path.read_text()

    class CancelHalfway(RecordingProgress):
        def cancelled(self) -> bool:
            return any(f > 0.4 for f, _ in self.events)

    with pytest.raises(Cancelled):
        run_detect(DetectConfig(model=str(standin_run), imagery=str(mosaic), out=tmp_path / "det",
                                overwrite=True), CancelHalfway())
    assert old.summary_path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "trainer", "detect", *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=ROOT)


@pytest.mark.sample_data
def test_cli_reports_bad_input_clearly(standin_run: Path, mosaic: Path, tmp_path: Path) -> None:
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"this is not a model")
    bad = _cli("--model", str(junk), "--imagery", str(mosaic), "--out", str(tmp_path / "o"))
    assert bad.returncode != 0 and f"camp detect: error: not a model: {junk}" in bad.stderr
    with rasterio.open(mosaic) as src:
        grey = write_geotiff(tmp_path / "grey.tif", src.read([1]), src.transform, src.crs)
    bad = _cli("--model", str(standin_run), "--imagery", str(grey), "--out", str(tmp_path / "o"))
    assert bad.returncode != 0 and "has 1; give an RGB raster" in bad.stderr
    good = _cli("--model", str(standin_run), "--imagery", str(mosaic), "--out", str(tmp_path / "ok"), "--json")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["footprint_count"] > 0


def test_small_raster_is_padded(standin_run: Path, tmp_path: Path) -> None:
    """A raster smaller than one tile runs as one padded window and keeps its own size."""
    from affine import Affine

    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (3, 40, 50), dtype=np.uint8)
    small = write_geotiff(tmp_path / "small.tif", data, Affine(0.075, 0, 500000, 0, -0.075, 100000), "EPSG:32636")
    r = detect(standin_run, small, tmp_path / "o")
    probability = read_probability(r.probability)
    assert probability.shape == (40, 50) and probability.count() == 2000
    assert STANDIN_TILE > 50


@pytest.mark.parametrize("block", [7, 64, 300])
def test_footprints_traced_in_blocks_equal_the_whole_mask(block: int) -> None:
    """Pieces cut by block edges are merged back: same polygons as tracing the mask at once."""
    import shapely
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.features import shapes
    from shapely.geometry import shape

    from trainer.vectorize import FootprintCollector

    rng = np.random.default_rng(3)
    mask = (rng.random((120, 90)) > 0.55).astype(np.uint8)  # speckle: many shapes, holes, long snakes
    probability = rng.random(mask.shape).astype(np.float32)
    transform = Affine(0.5, 0, 600000, 0, -0.5, 40000)
    collector = FootprintCollector(transform, CRS.from_epsg(32636), mask.shape[0])
    for row in range(0, mask.shape[0], block):
        collector.add(row, mask[row:row + block], probability[row:row + block])
    found = collector.finish()
    whole = [shape(g) for g, v in shapes(mask, mask=mask == 1, transform=transform, connectivity=4) if v == 1]
    assert found.count == len(whole)
    assert shapely.unary_union(found.geometries).symmetric_difference(shapely.unary_union(whole)).area < 1e-6
    np.testing.assert_allclose(sorted(found.area_m2), sorted(g.area for g in whole), rtol=1e-3)  # UTM: ~true m2
    assert found.mean_probability.min() >= 0 and found.mean_probability.max() <= 1
    assert abs(np.average(found.mean_probability, weights=found.area_m2) - probability[mask == 1].mean()) < 1e-3
