"""The XYZ source against a real loopback tile server: formats, templates, retries, faults, cache."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from servers import TileServer

from trainer.errors import TileFetchError
from trainer.sources import USER_AGENT
from trainer.sources.xyz import XyzSource, decode_tile
from trainer.tiling import Tile

pytestmark = pytest.mark.sample_data


def _png(kampala, tile: Tile) -> Path:
    return kampala.tiles_dir / str(tile.z) / str(tile.x) / f"{tile.y}.png"


def _pixels(kampala, tile: Tile) -> np.ndarray:
    return np.asarray(Image.open(_png(kampala, tile)).convert("RGBA"))


def _fetch_all(source: XyzSource, tiles) -> dict:
    return {o.tile: o for o in source.fetch(tiles)}


def test_png_with_alpha_decodes_to_rgb_and_validity(kampala):
    tile = kampala.tiles[0]
    expected = _pixels(kampala, tile)
    chip = decode_tile(_png(kampala, tile).read_bytes())
    assert chip.rgb.shape == (3, 256, 256) and chip.rgb.dtype == np.uint8
    np.testing.assert_array_equal(chip.rgb, expected[..., :3].transpose(2, 0, 1))
    np.testing.assert_array_equal(chip.valid, expected[..., 3] > 0)
    assert not chip.valid.all()  # this real tile has transparent pixels


def test_garbage_bytes_give_a_clear_error():
    with pytest.raises(ValueError, match="not a PNG/JPEG/WebP image .*<html>"):
        decode_tile(b"<html>rate limited</html>")


@pytest.mark.parametrize(("fmt", "ext", "tolerance"), [("JPEG", "jpg", 12), ("WEBP", "webp", 12)])
def test_jpeg_and_webp_tiles_over_http(kampala, tmp_path, fmt, ext, tolerance):
    tiles = kampala.tiles[:4]
    for tile in tiles:
        target = tmp_path / str(tile.z) / str(tile.x) / f"{tile.y}.{ext}"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(_png(kampala, tile)).convert("RGB").save(target, fmt, quality=95)
    with TileServer(tmp_path, ext=ext) as server:
        outcomes = _fetch_all(XyzSource(server.template, cache_dir=tmp_path / "cache"), tiles)
    for tile in tiles:
        got = outcomes[tile]
        assert got.status == "downloaded" and got.image.valid.all()
        expected = _pixels(kampala, tile)[..., :3].transpose(2, 0, 1).astype(int)
        assert np.abs(got.image.rgb.astype(int) - expected).mean() < tolerance


@pytest.mark.parametrize("scheme", ["tms", "quadkey"])
def test_tms_and_quadkey_templates(kampala, tmp_path, scheme):
    tiles = kampala.tiles[:3]
    for tile in tiles:
        name = f"{tile.z}/{tile.x}/{tile.tms_y}.png" if scheme == "tms" else f"q/{tile.quadkey}.png"
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(_png(kampala, tile), tmp_path / name)
    with TileServer(tmp_path) as server:
        template = server.url + ("/{z}/{x}/{-y}.png" if scheme == "tms" else "/q/{q}.png")
        outcomes = _fetch_all(XyzSource(template, cache_dir=tmp_path / "cache"), tiles)
    for tile in tiles:
        np.testing.assert_array_equal(outcomes[tile].image.rgb, _pixels(kampala, tile)[..., :3].transpose(2, 0, 1))


def test_cache_second_pass_makes_no_requests(tile_server, kampala, tmp_path):
    tiles = kampala.tiles[:8]
    first = _fetch_all(XyzSource(tile_server.template, cache_dir=tmp_path, workers=4), tiles)
    assert {o.status for o in first.values()} == {"downloaded"}
    assert tile_server.tile_requests == 8
    assert set(tile_server.user_agents) == {USER_AGENT} and USER_AGENT.startswith("camp-mapper/")
    second = _fetch_all(XyzSource(tile_server.template, cache_dir=tmp_path, workers=4), tiles)
    assert {o.status for o in second.values()} == {"cached"}
    assert tile_server.tile_requests == 8
    for tile in tiles:
        np.testing.assert_array_equal(first[tile].image.rgb, second[tile].image.rgb)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_honour_retry_after(tile_server, kampala, tmp_path, status):
    tile_server.faults.fail_first["*"] = 2
    tile_server.faults.fail_status = status
    tile_server.faults.retry_after = "0.4"
    tiles = kampala.tiles[:4]
    start = time.monotonic()
    outcomes = _fetch_all(XyzSource(tile_server.template, cache_dir=tmp_path, retries=3, backoff=0.01), tiles)
    assert {o.status for o in outcomes.values()} == {"downloaded"}
    assert tile_server.tile_requests == 4 * 3
    assert time.monotonic() - start >= 0.8  # waited as told twice, not the 0.01 s backoff


def test_backoff_without_retry_after(tile_server, kampala, tmp_path):
    tile_server.faults.fail_first["*"] = 2
    tile_server.faults.retry_after = ""
    start = time.monotonic()
    outcome = next(XyzSource(tile_server.template, cache_dir=tmp_path, backoff=0.2).fetch(kampala.tiles[:1]))
    assert outcome.status == "downloaded"
    assert time.monotonic() - start >= 0.2 + 0.4  # exponential: 0.2 s then 0.4 s


def test_retries_exhausted_is_a_failed_tile(tile_server, kampala, tmp_path):
    tile_server.faults.fail_first["*"] = 10
    outcome = next(XyzSource(tile_server.template, cache_dir=tmp_path, retries=2, backoff=0.01).fetch(kampala.tiles[:1]))
    assert outcome.status == "failed" and "HTTP 503 (after 2 retries)" in outcome.reason


def test_stalled_tile_times_out_and_retry_succeeds(tile_server, kampala, tmp_path):
    tile = kampala.tiles[0]
    path = f"/{tile.z}/{tile.x}/{tile.y}.png"
    tile_server.faults.stall_seconds[path] = 2.0  # only the first request stalls
    start = time.monotonic()
    outcome = next(XyzSource(tile_server.template, cache_dir=tmp_path, timeout=0.3, backoff=0.01).fetch([tile]))
    assert outcome.status == "downloaded"
    assert tile_server.requests[path] == 2
    assert time.monotonic() - start < 2.0


def test_404_and_garbage_are_outcomes_not_exceptions(tile_server, kampala, tmp_path):
    tiles = list(kampala.tiles[:3])
    bad = tiles[1]
    tile_server.faults.garbage.add(f"/{bad.z}/{bad.x}/{bad.y}.png")
    absent = Tile(tiles[0].x, tiles[0].y - 50, tiles[0].z)
    outcomes = _fetch_all(XyzSource(tile_server.template, cache_dir=tmp_path), tiles + [absent])
    assert outcomes[absent].status == "missing" and "HTTP 404" in outcomes[absent].reason
    assert outcomes[bad].status == "failed" and "not a PNG/JPEG/WebP" in outcomes[bad].reason
    assert outcomes[tiles[0]].status == outcomes[tiles[2]].status == "downloaded"
    # A garbage answer must not be cached.
    again = _fetch_all(XyzSource(tile_server.template, cache_dir=tmp_path), [bad])
    assert again[bad].status == "failed"


def test_unreachable_server_fails_fast_with_offline_form(kampala, tmp_path):
    with TileServer(kampala.tiles_dir) as server:
        template = server.template
    start = time.monotonic()
    with pytest.raises(TileFetchError, match=r"camp fetch \.\.\. --imagery 'file:///.*--labels labels.geojson"):
        list(XyzSource(template, cache_dir=tmp_path, backoff=0.05).fetch(kampala.tiles))
    assert time.monotonic() - start < 5


def test_file_template_reads_folder(kampala, tmp_path):
    outcomes = _fetch_all(XyzSource(kampala.file_template), kampala.tiles[:2] + (Tile(1, 1, 21),))
    assert [outcomes[t].status for t in kampala.tiles[:2]] == ["read", "read"]
    assert outcomes[Tile(1, 1, 21)].status == "missing"


def test_resized_512px_tile():
    buffer = io.BytesIO()
    Image.new("RGB", (512, 512), (10, 20, 30)).save(buffer, "PNG")
    chip = decode_tile(buffer.getvalue())
    assert chip.rgb.shape == (3, 256, 256) and (chip.rgb[:, 0, 0] == (10, 20, 30)).all()
