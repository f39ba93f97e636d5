"""`camp fetch` end to end over real loopback servers and the real Kampala tiles and footprints."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer
from servers import OverpassServer, TileServer
from shapely.geometry import shape

from trainer.config import FetchConfig
from trainer.errors import (
    Cancelled,
    InputError,
    LabelsError,
    OutputExistsError,
    OverpassError,
    TileFetchError,
    TooManyTilesError,
)
from trainer.fetch import bbox_lonlat, preflight, run_fetch
from trainer.progress import NullProgress, RecordingProgress
from trainer.tiling import Tile, ground_resolution

pytestmark = pytest.mark.sample_data
TO_MERCATOR = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)


def bbox_of(tiles) -> tuple[float, float, float, float]:
    """A lon/lat bbox a hair inside the outer edges of ``tiles``."""
    bounds = [t.bounds_lonlat for t in tiles]
    eps = 1e-7
    return (min(b[0] for b in bounds) + eps, min(b[1] for b in bounds) + eps,
            max(b[2] for b in bounds) - eps, max(b[3] for b in bounds) - eps)


def corner(kampala, cols: int = 2, rows: int = 2) -> list[Tile]:
    x0, y0 = min(t.x for t in kampala.tiles), min(t.y for t in kampala.tiles)
    return [Tile(x0 + c, y0 + r, kampala.zoom) for r in range(rows) for c in range(cols)]


def config(kampala, server, out: Path, tiles=None, **kw) -> FetchConfig:
    kw.setdefault("labels", str(kampala.labels))
    return FetchConfig(bbox=bbox_of(tiles) if tiles else kampala.bbox, zoom=kampala.zoom,
                       imagery=server.template, out=out, **kw)


def to_mercator(polygons_lonlat: list) -> list:
    return [shapely.transform(p, lambda xy: np.column_stack(TO_MERCATOR.transform(xy[:, 0], xy[:, 1])))
            for p in polygons_lonlat]


def reference_mask(tile: Tile, polygons_3857: list) -> np.ndarray:
    """Independent of trainer.chips (no GDAL rasterize): is each pixel centre inside a footprint?"""
    inside = np.zeros((256, 256), dtype=bool)
    t = tile.transform()
    for polygon in polygons_3857:
        minx, miny, maxx, maxy = polygon.bounds
        # Only the pixels under the polygon's bounding box need the point-in-polygon test.
        c0, c1 = max(0, int((minx - t.c) / t.a)), min(256, int((maxx - t.c) / t.a) + 1)
        r0, r1 = max(0, int((maxy - t.f) / t.e)), min(256, int((miny - t.f) / t.e) + 1)
        if c0 >= c1 or r0 >= r1:
            continue
        cols, rows = np.meshgrid(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5)
        inside[r0:r1, c0:c1] |= shapely.contains_xy(polygon, t.c + cols * t.a, t.f + rows * t.e)
    return inside


def test_fetch_block_over_http_then_cached(kampala, tile_server, overpass_server, tmp_path):
    progress = RecordingProgress()
    out = tmp_path / "ds"
    result = run_fetch(config(kampala, tile_server, out, labels="overpass",
                              overpass_url=overpass_server.interpreter_url), progress)
    assert result.chips == len(kampala.tiles) == result.downloaded_tiles and result.cached_tiles == 0
    assert result.missing_tiles == result.failed_tiles == 0 and 0 < result.labelled_chips < result.chips
    fractions = [f for f, _ in progress.events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    manifest = json.loads((out / "manifest.json").read_text())
    lat = (kampala.bbox[1] + kampala.bbox[3]) / 2
    assert manifest["resolution_m"] == pytest.approx(ground_resolution(lat, 21)) == pytest.approx(0.0746, abs=1e-3)
    assert manifest["counts"]["chips"] == 96 and manifest["config"]["zoom"] == 21 and manifest["version"]
    labels = [shape(f["geometry"]) for f in json.loads((out / "labels.geojson").read_text())["features"]]
    assert len(labels) == result.label_polygons > 100
    footprints = to_mercator(labels)

    predicted = reference = inter = 0
    for chip in manifest["chips"]:
        tile = Tile(chip["tile"]["x"], chip["tile"]["y"], chip["tile"]["z"])
        assert chip["bounds_lonlat"] == pytest.approx(tile.bounds_lonlat)
        with rasterio.open(out / chip["image"]) as img, rasterio.open(out / chip["mask"]) as msk:
            assert img.crs.to_epsg() == msk.crs.to_epsg() == 3857
            assert img.transform == msk.transform == tile.transform()
            assert (img.count, img.dtypes[0], msk.count) == (3, "uint8", 1)
            mask = msk.read(1)
        assert set(np.unique(mask)) <= {0, 1}
        assert chip["label_fraction"] == pytest.approx(mask.mean(), abs=1e-6)
        expected = reference_mask(tile, footprints)
        predicted += int(mask.sum())
        reference += int(expected.sum())
        inter += int((expected & (mask > 0)).sum())
    iou = inter / (predicted + reference - inter)
    assert iou > 0.99 and reference / (96 * 256 * 256) > 0.1

    # Same extent again (overwrite): every tile from the cache, not one HTTP request.
    before = tile_server.tile_requests
    again = run_fetch(config(kampala, tile_server, out, labels="overpass", overwrite=True,
                             overpass_url=overpass_server.interpreter_url), NullProgress())
    assert tile_server.tile_requests == before
    assert again.cached_tiles == 96 and again.downloaded_tiles == 0


def test_nodata_pixels_are_masked_in_chips(kampala, tile_server, tmp_path):
    tile = kampala.tiles[0]  # has transparent pixels
    run_fetch(config(kampala, tile_server, tmp_path / "ds", [tile], labels="none"), NullProgress())
    from PIL import Image

    alpha = np.asarray(Image.open(kampala.tiles_dir / f"{tile.z}/{tile.x}/{tile.y}.png"))[..., 3]
    with rasterio.open(tmp_path / "ds" / "chips" / f"{tile.name}.tif") as src:
        np.testing.assert_array_equal(src.dataset_mask() > 0, alpha > 0)
    assert not list((tmp_path / "ds").rglob("*.msk"))  # the mask is inside the GeoTIFF
    with rasterio.open(tmp_path / "ds" / "labels" / f"{tile.name}.tif") as src:
        assert not src.read(1).any()  # labels='none': negatives only


def test_faults_are_retried_counted_and_reported(kampala, tile_server, tmp_path):
    tiles = corner(kampala)
    tile_server.faults.fail_first["*"] = 1
    garbage, absent = tiles[1], tiles[2]
    tile_server.faults.garbage.add(f"/{garbage.z}/{garbage.x}/{garbage.y}.png")
    tile_server.faults.status[f"/{absent.z}/{absent.x}/{absent.y}.png"] = 404
    progress = RecordingProgress()
    result = run_fetch(config(kampala, tile_server, tmp_path / "ds", tiles, labels="none"), progress)
    assert result.chips == 2 and result.failed_tiles == 1 and result.missing_tiles == 1
    assert any(garbage.name in p and "not a PNG/JPEG/WebP" in p for p in result.problems)
    assert any(absent.name in p and "HTTP 404" in p for p in result.problems)
    assert any(garbage.name in line for line in progress.lines)  # reported to the user, not only counted
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["failed"][0]["tile"] == garbage.name and manifest["missing"][0]["tile"] == absent.name
    assert sorted(c["name"] for c in manifest["chips"]) == sorted([tiles[0].name, tiles[3].name])


def test_all_404_or_all_garbage_is_fatal_and_writes_nothing(kampala, tile_server, tmp_path):
    tiles = corner(kampala)
    tile_server.faults.status["*"] = 404
    with pytest.raises(TileFetchError, match="none of the 4 tiles at zoom 21 exist"):
        run_fetch(config(kampala, tile_server, tmp_path / "a", tiles, labels="none"), NullProgress())
    assert not (tmp_path / "a").exists()
    tile_server.faults.status.clear()
    tile_server.faults.garbage.add("*")
    with pytest.raises(TileFetchError, match="all 4 tiles failed .*not a PNG/JPEG/WebP"):
        run_fetch(config(kampala, tile_server, tmp_path / "b", tiles, labels="none"), NullProgress())
    assert not (tmp_path / "b").exists()


def test_unreachable_server_fails_fast(kampala, tmp_path):
    with TileServer(kampala.tiles_dir) as server:
        pass
    start = time.monotonic()
    with pytest.raises(TileFetchError, match=r"cannot reach the tile server .*--imagery 'file:///"):
        run_fetch(config(kampala, server, tmp_path / "ds", labels="none"), NullProgress())
    assert time.monotonic() - start < 3 and not (tmp_path / "ds").exists()
    with pytest.raises(TileFetchError, match="--labels labels.geojson"):
        preflight(server.template, "none", "", timeout=2)


def test_too_many_tiles_before_any_request(kampala, tile_server, tmp_path):
    with pytest.raises(TooManyTilesError, match="needs 96 tiles .*cap of 10"):
        run_fetch(config(kampala, tile_server, tmp_path / "ds", max_tiles=10), NullProgress())
    assert tile_server.tile_requests == 0 and not (tmp_path / "ds").exists()


def test_label_problems(kampala, tile_server, tmp_path):
    tiles = corner(kampala, 1, 1)
    with pytest.raises(LabelsError, match="missing.geojson does not exist"):
        run_fetch(config(kampala, tile_server, tmp_path / "a", tiles, labels=str(tmp_path / "missing.geojson")),
                  NullProgress())
    assert not (tmp_path / "a").exists() and tile_server.tile_requests <= 1
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    progress = RecordingProgress()
    result = run_fetch(config(kampala, tile_server, tmp_path / "b", tiles, labels=str(empty)), progress)
    assert result.chips == 1 and result.labelled_chips == 0
    assert any("no label polygons" in line for line in progress.lines)


def test_overpass_remark_fails_the_fetch(kampala, tile_server, overpass_server, tmp_path):
    overpass_server.faults.remark = "runtime error: Query ran out of memory in \"query\" at line 1."
    with pytest.raises(OverpassError, match="ran out of memory"):
        run_fetch(config(kampala, tile_server, tmp_path / "ds", corner(kampala), labels="overpass",
                         overpass_url=overpass_server.interpreter_url), NullProgress())
    assert not (tmp_path / "ds").exists()


def test_refugee_site_filter_reaches_overpass(kampala, tile_server, tmp_path):
    with OverpassServer(kampala.labels, tags={"amenity": "refugee_site"}) as server:
        result = run_fetch(config(kampala, tile_server, tmp_path / "ds", corner(kampala), labels="overpass",
                                  osm_filter="amenity=refugee_site", overpass_url=server.interpreter_url),
                           NullProgress())
        assert 'way["amenity"="refugee_site"]' in server.queries[-1]
    assert result.label_polygons > 0


def test_existing_dataset_is_refused_and_kept(kampala, tile_server, tmp_path):
    tiles = corner(kampala)
    out = tmp_path / "ds"
    run_fetch(config(kampala, tile_server, out, tiles), NullProgress())
    manifest = (out / "manifest.json").read_text()
    with pytest.raises(OutputExistsError, match="already holds a complete dataset; pass --resume .* --overwrite"):
        run_fetch(config(kampala, tile_server, out, tiles), NullProgress())
    # A failing overwrite leaves the old dataset in place.
    tile_server.faults.status["*"] = 404
    with pytest.raises(TileFetchError):
        run_fetch(config(kampala, tile_server, out, tiles, overwrite=True, cache_dir=tmp_path / "c2"), NullProgress())
    assert (out / "manifest.json").read_text() == manifest and len(list((out / "chips").glob("*.tif"))) == 4


class CancelAfter(NullProgress):
    """Cancels once ``n`` tiles were reported (what Ctrl-C does through the runner)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def report(self, fraction: float, message: str = "") -> None:
        if message.startswith("tile "):
            self.n -= 1
            if self.n <= 0:
                self.cancel()


def test_cancel_then_resume(kampala, tile_server, tmp_path):
    tiles = corner(kampala, 4, 3)
    out = tmp_path / "ds"
    with pytest.raises(Cancelled):
        run_fetch(config(kampala, tile_server, out, tiles, workers=2), CancelAfter(5))
    written = sorted((out / "chips").glob("*.tif"))
    assert 5 <= len(written) < 12 and not (out / "manifest.json").exists()
    assert not list(out.rglob(".*part*"))  # only complete files
    for path in written:
        with rasterio.open(path) as src:
            assert src.read().shape == (3, 256, 256)
    stamps = {p.name: p.stat().st_mtime_ns for p in written}
    with pytest.raises(OutputExistsError, match="partial .*--resume"):
        run_fetch(config(kampala, tile_server, out, tiles), NullProgress())

    result = run_fetch(config(kampala, tile_server, out, tiles, resume=True), NullProgress())
    assert result.chips == 12 and result.resumed_chips == len(written)
    assert result.downloaded_tiles + result.cached_tiles == 12 - len(written)
    assert all((out / "chips" / name).stat().st_mtime_ns == ns for name, ns in stamps.items())
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["chips"]) == 12 and manifest["counts"]["resumed"] == len(written)


def test_bbox_in_another_crs_selects_the_same_tiles(kampala):
    from trainer.tiling import tiles_for_bbox

    tiles = corner(kampala, 3, 2)
    lonlat = bbox_of(tiles)
    west, top = tiles[0].bounds_3857[0], tiles[0].bounds_3857[3]
    _, south, east, _ = tiles[-1].bounds_3857
    north, inset = top, 0.001  # metres
    merc = (west + inset, south + inset, east - inset, north - inset)
    converted = bbox_lonlat(merc, "EPSG:3857")
    assert tiles_for_bbox(converted, 21) == tiles_for_bbox(lonlat, 21) == sorted(tiles, key=lambda t: (t.y, t.x))
    with pytest.raises(InputError, match="unknown bbox CRS 'EPSG:999999'"):
        bbox_lonlat(merc, "EPSG:999999")
