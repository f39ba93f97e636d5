"""discover/load_image/load_mask over every supported layout, and clear errors for broken folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.datasets import Dataset, Sample, discover, load_image, load_mask
from trainer.errors import DatasetError


def _fair_folder(root: Path, tiles, kampala, mask_value: int = 255, image_ext: str = "png") -> Path:
    """A fAIr-style folder pair: chips/OAM-x-y-z.png with masks 0/255 in labels/."""
    (root / "chips").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, tile in enumerate(tiles):
        stem = f"OAM-{tile.x}-{tile.y}-{tile.z}"
        Image.open(kampala.tiles_dir / f"{tile.z}/{tile.x}/{tile.y}.png").convert("RGB").save(
            root / "chips" / f"{stem}.{image_ext}")
        mask = np.zeros((256, 256), dtype=np.uint8)
        mask[i * 10:(i + 1) * 10 + 20, 40:90] = mask_value
        Image.fromarray(mask).save(root / "labels" / f"{stem}.png")
    return root


@pytest.mark.sample_data
def test_fetch_folder(kampala_dataset: Path, kampala):
    dataset = discover(kampala_dataset)
    assert isinstance(dataset, Dataset) and dataset.layout == "camp" and len(dataset) == 96
    assert dataset.zoom == 21 and dataset.resolution_m == pytest.approx(0.0746, abs=1e-3)
    assert dataset.bbox_lonlat == pytest.approx(kampala.bbox)
    sample = dataset.samples[0]
    assert isinstance(sample, Sample) and sample.tile in kampala.tiles and sample.bounds == sample.tile.bounds_3857
    image = load_image(sample.image)
    expected = np.asarray(Image.open(kampala.tiles_dir / f"21/{sample.tile.x}/{sample.tile.y}.png").convert("RGB"))
    np.testing.assert_array_equal(image, expected.transpose(2, 0, 1))
    masks = [load_mask(s.mask) for s in dataset.samples]
    assert all(m.dtype == np.uint8 and m.shape == (256, 256) and set(np.unique(m)) <= {0, 1} for m in masks)
    assert 0.05 < np.mean([m.mean() for m in masks]) < 0.6


@pytest.mark.sample_data
@pytest.mark.parametrize(("mask_value", "image_ext"), [(255, "png"), (1, "jpg")])
def test_plain_folder_pair(kampala, tmp_path, mask_value, image_ext):
    tiles = kampala.tiles[:3]
    root = _fair_folder(tmp_path / "fair", tiles, kampala, mask_value, image_ext)
    dataset = discover(root)
    assert dataset.layout == "folders" and len(dataset) == 3 and dataset.zoom == 21
    assert {s.tile for s in dataset.samples} == set(tiles)
    mask = load_mask(dataset.samples[0].mask)
    assert mask.sum() == 30 * 50 and mask.max() == 1
    assert load_image(dataset.samples[0].image).shape == (3, 256, 256)


def test_rgba_image_drops_alpha_and_grey_mask_thresholds(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png").shape == (3, 8, 8) and load_image(tmp_path / "a.png")[0, 0, 0] == 200
    noisy = np.array([[0, 3, 130, 250]], dtype=np.uint8)  # JPEG-like noise around 0/255
    Image.fromarray(noisy).save(tmp_path / "m.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "m.png"), [[0, 0, 1, 1]])
    classes = np.array([[0, 1, 2, 2]], dtype=np.uint8)
    Image.fromarray(classes).save(tmp_path / "c.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "c.png", positive=(2,)), [[0, 0, 1, 1]])


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        discover(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no images in .*manifest.json.*map.txt"):
        discover(tmp_path)
    (tmp_path / "chips").mkdir()
    with pytest.raises(DatasetError, match="no images in"):
        discover(tmp_path)


@pytest.mark.sample_data
def test_images_without_masks_and_wrong_sizes(kampala, tmp_path):
    root = _fair_folder(tmp_path / "fair", kampala.tiles[:3], kampala)
    removed = sorted((root / "labels").iterdir())[:2]
    for path in removed:
        path.unlink()
    with pytest.raises(DatasetError, match="2 of 3 images .* have no mask"):
        discover(root)
    root2 = _fair_folder(tmp_path / "fair2", kampala.tiles[:2], kampala)
    small = sorted((root2 / "labels").iterdir())[0]
    Image.fromarray(np.zeros((128, 128), dtype=np.uint8)).save(small)
    with pytest.raises(DatasetError, match="is 128x128 px but its image .* is 256x256"):
        discover(root2)


@pytest.mark.sample_data
def test_classified_tiles_folder_with_arcgis_stats(kampala, esri_examples, tmp_path):
    """An ArcGIS export whose stats say class 1 is the background: only class 2 is positive."""
    root = tmp_path / "esri"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    lines = []
    for i, tile in enumerate(kampala.tiles[:2], start=1):
        Image.open(kampala.tiles_dir / f"21/{tile.x}/{tile.y}.png").convert("RGB").save(root / "images" / f"{i:09d}.tif")
        label = np.ones((256, 256), dtype=np.uint8)
        label[:50, :50] = 2
        Image.fromarray(label).save(root / "labels" / f"{i:09d}.tif")
        lines.append(f"images\\{i:09d}.tif  labels\\{i:09d}.tif \r\n")
    (root / "map.txt").write_bytes("".join(reversed(lines)).encode())
    shutil.copy(esri_examples / "esri_accumulated_stats.json", root)
    shutil.copy(esri_examples / "stats.txt", root)
    dataset = discover(root)
    assert dataset.layout == "esri" and dataset.positive_values == (2,) and len(dataset) == 2
    assert dataset.samples[0].image.name == "000000002.tif" and dataset.samples[0].tile is None
    assert load_mask(dataset.samples[0].mask, dataset.positive_values).sum() == 2500


def test_corrupt_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"chips": [{"image": "x"}]}))
    with pytest.raises(DatasetError, match="not a camp fetch manifest"):
        discover(tmp_path)

