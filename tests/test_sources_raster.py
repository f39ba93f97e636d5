"""A local raster in another CRS (UTM) gives the same chips as the XYZ tiles it was made from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.warp import Resampling, calculate_default_transform, reproject

from trainer.config import FetchConfig
from trainer.datasets import discover, load_image
from trainer.errors import InputError
from trainer.fetch import run_fetch
from trainer.progress import NullProgress
from trainer.sources.raster import RasterSource
from trainer.tiling import Tile

pytestmark = pytest.mark.sample_data


def _block(kampala, cols: int, rows: int) -> list[list[Tile]]:
    x0 = min(t.x for t in kampala.tiles)
    y0 = min(t.y for t in kampala.tiles)
    return [[Tile(x0 + c, y0 + r, kampala.zoom) for c in range(cols)] for r in range(rows)]


def _utm_mosaic(kampala, block: list[list[Tile]], path: Path) -> Path:
    """Mosaic the tiles in EPSG:3857 and warp it to EPSG:32636 (RGB + alpha), as a GIS user would."""
    rows = [np.concatenate([np.asarray(Image.open(kampala.tiles_dir / f"{t.z}/{t.x}/{t.y}.png").convert("RGBA"))
                            for t in row], axis=1) for row in block]
    mosaic = np.concatenate(rows, axis=0).transpose(2, 0, 1)
    src_transform = block[0][0].transform()
    height, width = mosaic.shape[1:]
    left, top = src_transform.c, src_transform.f
    bounds = (left, top - height * abs(src_transform.e), left + width * src_transform.a, top)
    dst_transform, dst_w, dst_h = calculate_default_transform("EPSG:3857", "EPSG:32636", width, height, *bounds)
    out = np.zeros((4, dst_h, dst_w), dtype=np.uint8)
    for band in range(4):
        reproject(mosaic[band], out[band], src_transform=src_transform, src_crs="EPSG:3857",
                  dst_transform=dst_transform, dst_crs="EPSG:32636", resampling=Resampling.bilinear)
    with rasterio.open(path, "w", driver="GTiff", width=dst_w, height=dst_h, count=4, dtype="uint8",
                       crs="EPSG:32636", transform=dst_transform, photometric="RGB", alpha="YES") as dst:
        dst.write(out)
    return path


@pytest.fixture(scope="module")
def utm_mosaic(kampala, tmp_path_factory):
    block = _block(kampala, 4, 3)
    return block, _utm_mosaic(kampala, block, tmp_path_factory.mktemp("raster") / "ortho_utm.tif")


def test_read_window_matches_tiles(kampala, utm_mosaic):
    block, path = utm_mosaic
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 32636
    inner = [block[1][1], block[1][2]]  # away from the mosaic's edges
    with RasterSource(path) as source:
        for tile in inner:
            chip = source.read_window_3857(tile.bounds_3857, 256, 256)
            expected = np.asarray(Image.open(kampala.tiles_dir / f"{tile.z}/{tile.x}/{tile.y}.png").convert("RGBA"))
            both = chip.valid & (expected[..., 3] > 0)
            assert both.mean() > 0.5
            diff = np.abs(chip.rgb.astype(int) - expected[..., :3].transpose(2, 0, 1).astype(int))
            assert diff[:, both].mean() < 4  # a 1-2 px misalignment gives 6-10
        # Outside the raster every pixel is nodata.
        far = Tile(block[0][0].x - 10, block[0][0].y, block[0][0].z)
        assert not source.read_tile(far).valid.any()


def test_fetch_from_raster_matches_fetch_from_tiles(kampala, utm_mosaic, tmp_path):
    block, path = utm_mosaic
    inner = block[1][1:3]
    eps = 1e-7
    west, _, _, north = inner[0].bounds_lonlat
    _, south, east, _ = inner[-1].bounds_lonlat
    bbox = (west + eps, south + eps, east - eps, north - eps)
    common = dict(bbox=bbox, zoom=kampala.zoom, labels="none")
    from_raster = run_fetch(FetchConfig(imagery=str(path), out=tmp_path / "r", **common), NullProgress())
    from_tiles = run_fetch(FetchConfig(imagery=kampala.file_template, out=tmp_path / "t", **common), NullProgress())
    assert from_raster.chips == from_tiles.chips == 2
    raster_set, tile_set = discover(tmp_path / "r"), discover(tmp_path / "t")
    for a, b in zip(raster_set.samples, tile_set.samples, strict=True):
        assert a.tile == b.tile
        with rasterio.open(a.image) as ra, rasterio.open(b.image) as rb:
            assert ra.transform == rb.transform == a.tile.transform()
            valid = (ra.dataset_mask() > 0) & (rb.dataset_mask() > 0)
        diff = np.abs(load_image(a.image).astype(int) - load_image(b.image).astype(int))
        assert diff[:, valid].mean() < 4


def test_bad_rasters(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        RasterSource(tmp_path / "none.tif")
    path = tmp_path / "float.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype="float32", crs="EPSG:3857",
                       transform=Tile(0, 0, 1).transform(4)) as dst:
        dst.write(np.zeros((1, 4, 4), dtype="float32"))
    with pytest.raises(InputError, match="float32, expected 8-bit"):
        RasterSource(path)


def test_window_edges_nodata_and_grey(tmp_path):
    tile = Tile(1238448, 1046528, 21)
    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=256, height=256, count=3, dtype="uint8",
                       crs="EPSG:3857", transform=tile.transform()) as dst:
        dst.write(np.full((3, 256, 256), 77, np.uint8))
    left, bottom, right, top = tile.bounds_3857
    shifted = (left + (right - left) / 2, bottom, right + (right - left) / 2, top)  # half off the east edge
    with RasterSource(plain) as source:
        chip = source.read_window_3857(shifted, 256, 256)
    assert chip.valid[:, :127].all() and not chip.valid[:, 129:].any()
    assert (chip.rgb[:, :, :127] == 77).all()
    grey = tmp_path / "grey.tif"
    values = np.full((1, 256, 256), 50, np.uint8)
    values[:, :, :10] = 0
    with rasterio.open(grey, "w", driver="GTiff", width=256, height=256, count=1, dtype="uint8",
                       crs="EPSG:3857", transform=tile.transform(), nodata=0) as dst:
        dst.write(values)
    with RasterSource(grey) as source:
        chip = source.read_tile(tile)
    assert chip.rgb.shape == (3, 256, 256) and (chip.rgb[:, :, 20:] == 50).all()
    np.testing.assert_array_equal(chip.valid, values[0] > 0)
