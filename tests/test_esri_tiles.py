"""ArcGIS Classified Tiles: the real ArcGIS files parse, and what we write looks like them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from trainer.config import FetchConfig
from trainer.datasets import discover, load_image, load_mask
from trainer.esri_tiles import (
    LabelCounts,
    positive_values,
    read_classified_tiles,
    read_map,
    read_stats,
    write_metadata,
)
from trainer.fetch import run_fetch
from trainer.progress import NullProgress
from trainer.tiling import TILE_SIZE, Tile


def test_real_map_txt_and_stats(esri_examples: Path, tmp_path: Path):
    raw = (esri_examples / "map.txt").read_bytes()
    pairs = read_map(esri_examples / "map.txt")
    assert len(pairs) == raw.count(b"\r\n") == 3382
    assert pairs[0] == (esri_examples / "images" / "000000019.tif", esri_examples / "labels" / "000000019.tif")
    stats = read_stats(esri_examples / "esri_accumulated_stats.json")
    # Class 1 is in every image with 98% of the pixels: the exported background. Class 2 is the target.
    assert positive_values(stats) == (2,)
    shutil.copy(esri_examples / "map.txt", tmp_path / "map.txt")
    shutil.copy(esri_examples / "esri_accumulated_stats.json", tmp_path / "esri_accumulated_stats.json")
    tiles = read_classified_tiles(tmp_path)
    assert [c.value for c in tiles.classes] == [1, 2] and tiles.tile_size == (400, 400)
    assert tiles.positive_values == (2,)
    (tmp_path / "esri_accumulated_stats.json").unlink()
    assert read_classified_tiles(tmp_path).positive_values == tuple(range(1, 256))


def test_positive_rule_names_and_defaults():
    classes = [{"ClassValue": 1, "ClassName": "Background"}, {"ClassValue": 2, "ClassName": "tent"},
               {"ClassValue": 3, "ClassName": "shelter"}]
    assert positive_values({"Classes": classes}) == (2, 3)
    assert positive_values({"Classes": [{"ClassValue": 1, "ClassName": "building"}]}) == (1,)


def test_written_metadata_matches_arcgis_format(esri_examples: Path, tmp_path: Path):
    chips = [LabelCounts(1, {1: 100}), LabelCounts(2, {}), LabelCounts(3, {1: 50})]
    write_metadata(tmp_path, chips, {1: "camp_structure"}, tile_size=256)
    ours = (tmp_path / "map.txt").read_bytes()
    assert ours.splitlines(keepends=True)[0] == b"images\\000000001.tif  labels\\000000001.tif \r\n"
    theirs = json.loads((esri_examples / "esri_accumulated_stats.json").read_text())
    stats = json.loads((tmp_path / "esri_accumulated_stats.json").read_text())
    assert _shape(stats) == _shape(theirs)
    assert '"Version" : 1,' in (tmp_path / "esri_accumulated_stats.json").read_text()
    assert stats["ClassPixelStats"]["NumImagesPerClass"] == [2]
    assert stats["ClassPixelStats"]["PixelsPerClass"][0] == {"Min": 0, "Max": 100, "Mean": 50.0, "Sum": 150, "Count": 3}
    text = (tmp_path / "stats.txt").read_bytes().decode()
    real = (esri_examples / "stats.txt").read_bytes().decode()
    assert text.count("\r\n") == len(text.splitlines()) and text.splitlines()[3] == real.splitlines()[3]
    row = text.splitlines()[4]
    real_row = real.splitlines()[4]
    # Same column positions: value, images, pixels and the three sizes end where ArcGIS's do.
    assert [len(row[: i + 1]) for i, c in enumerate(row) if c != " " and (i + 1 == len(row) or row[i + 1] == " ")][1:] \
        == [len(real_row[: i + 1]) for i, c in enumerate(real_row) if c != " " and (i + 1 == len(real_row) or real_row[i + 1] == " ")][1:]


def _shape(value):
    """Keys and nesting of a JSON value, without the numbers."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k not in ("Classes",)}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__.replace("int", "number").replace("float", "number")


@pytest.mark.sample_data
def test_fetch_esri_layout_round_trip(kampala, tmp_path: Path):
    # A 4 x 3 block of the sample (keeps the test quick).
    x0, y0 = min(t.x for t in kampala.tiles), min(t.y for t in kampala.tiles)
    west, _, _, north = Tile(x0, y0, 21).bounds_lonlat
    _, south, east, _ = Tile(x0 + 3, y0 + 2, 21).bounds_lonlat
    bbox = (west + 1e-7, south + 1e-7, east - 1e-7, north - 1e-7)
    common = dict(bbox=bbox, zoom=kampala.zoom, imagery=kampala.file_template, labels=str(kampala.labels))
    run_fetch(FetchConfig(out=tmp_path / "esri", output_format="esri", **common), NullProgress())
    run_fetch(FetchConfig(out=tmp_path / "tif", **common), NullProgress())
    esri, tif = discover(tmp_path / "esri"), discover(tmp_path / "tif")
    assert esri.layout == "esri" and tif.layout == "camp" and len(esri) == len(tif) == 12
    assert esri.positive_values == (1,) and esri.zoom == 21
    assert esri.resolution_m == pytest.approx(tif.resolution_m)
    by_tile = {s.tile: s for s in tif.samples}
    labelled = 0
    for sample in esri.samples:
        other = by_tile[sample.tile]
        np.testing.assert_array_equal(load_image(sample.image), load_image(other.image))
        mask = load_mask(sample.mask, esri.positive_values)
        np.testing.assert_array_equal(mask, load_mask(other.mask))
        labelled += bool(mask.any())
        with rasterio.open(sample.mask) as src:
            assert src.transform == sample.tile.transform() and src.count == 1
    stats = json.loads((tmp_path / "esri" / "esri_accumulated_stats.json").read_text())
    assert stats["NumTiles"] == 12 and stats["TileSizeX"] == TILE_SIZE
    assert stats["ClassPixelStats"]["NumImagesPerClass"] == [labelled] and labelled > 0
