"""Tile maths against independent formulas, and the bbox/zoom validation of FetchConfig."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from trainer.config import FetchConfig
from trainer.errors import InputError, TooManyTilesError
from trainer.tiling import Tile, format_tile_url, ground_resolution, tiles_for_bbox

HALF = math.pi * 6378137.0


def _lonlat_tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    """Slippy-map formula from the OSM wiki (independent of mercantile)."""
    n = 2 ** z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


def test_tile_transform_matches_mercator_grid():
    tile = Tile(1238448, 1046528, 21)
    size = 2 * HALF / 2 ** 21
    t = tile.transform()
    assert t.a == pytest.approx(size / 256) and t.e == pytest.approx(-size / 256)
    assert t.c == pytest.approx(-HALF + tile.x * size, abs=1e-6)
    assert t.f == pytest.approx(HALF - tile.y * size, abs=1e-6)
    # The far corner of pixel (256, 256) is the tile's south-east corner.
    left, bottom, right, top = tile.bounds_3857
    assert t @ (256, 256) == pytest.approx((right, bottom), abs=1e-6)


def test_tiles_for_bbox_covers_exactly_the_block():
    lon, lat = 32.5945, 0.3508
    x, y = _lonlat_tile(lon, lat, 19)
    west, south, east, north = Tile(x, y, 19).bounds_lonlat
    eps = 1e-9
    # A bbox that ends exactly on tile edges pulls in no neighbour.
    assert tiles_for_bbox((west, south, east, north), 19) == [Tile(x, y, 19)]
    inner = (west + 1e-7, south + 1e-7, east + (east - west) - 1e-7, north - eps)
    assert tiles_for_bbox(inner, 19) == [Tile(x, y, 19), Tile(x + 1, y, 19)]


def test_template_placeholders():
    tile = Tile(3, 5, 4)
    assert format_tile_url("https://h/{z}/{x}/{y}.png", tile) == "https://h/4/3/5.png"
    assert format_tile_url("https://h/{z}/{x}/{-y}.png", tile) == f"https://h/4/3/{2 ** 4 - 1 - 5}.png"
    # Quadkey by hand: for each zoom level from the top, digit = 2*ybit + xbit.
    quadkey = "".join(str(((5 >> i) & 1) * 2 + ((3 >> i) & 1)) for i in range(3, -1, -1))
    assert format_tile_url("https://h/a{q}.jpeg", tile) == f"https://h/a{quadkey}.jpeg"


def test_ground_resolution_equator_and_latitude():
    assert ground_resolution(0, 0) == pytest.approx(2 * HALF / 256)
    assert ground_resolution(60, 19) == pytest.approx(0.5 * 2 * HALF / 256 / 2 ** 19)


def test_too_many_tiles_says_how_many():
    with pytest.raises(TooManyTilesError, match=r"needs 4 tiles .* cap of 3.*--max-tiles 4"):
        tiles_for_bbox((-1, -1, 1, 1), 1, max_tiles=3)


@pytest.mark.parametrize(("bbox", "zoom", "message"), [
    ((32.6, 0.35, 32.5, 0.36), 19, "inverted"),
    ((32.5, 0.36, 32.6, 0.35), 19, "inverted"),
    ((200.0, 0.35, 201.0, 0.36), 19, "longitudes"),
    ((32.5, 86.0, 32.6, 87.0), 19, "swap lon and lat"),
    ((32.5, 0.35, 32.6, 0.36), 25, "zoom must be an integer from 0 to 24"),
    ((32.5, 0.35, 32.6, 0.36), -1, "zoom must be"),
])
def test_fetch_config_rejects_bad_extent(bbox, zoom, message, tmp_path: Path):
    with pytest.raises(InputError, match=message):
        FetchConfig(bbox=bbox, zoom=zoom, imagery="https://h/{z}/{x}/{y}.png", out=tmp_path)
