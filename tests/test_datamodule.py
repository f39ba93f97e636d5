"""Splits, in-memory chips, normalisation, augmentation and bad datasets.

Unit tests use generated chip folders (tests/synthetic_chips.py); the leakage test uses the real
Kampala dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic_chips import write_synthetic_chips

from trainer.datamodule import (
    CampDataModule,
    chip_location,
    photometric_jitter,
    random_geometry,
    split_samples,
    split_sizes,
)
from trainer.datasets import Sample
from trainer.errors import DatasetError
from trainer.tiling import Tile


def _samples(cols: int, rows: int, with_tile: bool = True, with_bounds: bool = False) -> list[Sample]:
    out = []
    for row in range(rows):
        for col in range(cols):
            tile = Tile(1000 + col, 2000 + row, 16)
            out.append(Sample(Path(f"{tile.name}.png"), Path(f"m{tile.name}.png"), tile if with_tile else None,
                              tile.bounds_3857 if with_bounds else None))
    return out


def _block(sample: Sample, size: int = 4) -> tuple[int, int]:
    col, row = chip_location(sample)
    return (col // size, row // size)


def test_spatial_split_keeps_blocks_whole_and_is_reproducible():
    samples = _samples(12, 8)
    split = split_samples(samples, 0.15, 0.15, seed=42, mode="spatial", log=lambda m: None)
    assert split.mode == "spatial" and split.block_tiles == 4
    assert sorted(split.train + split.val + split.test) == list(range(96))
    blocks = [{_block(samples[i]) for i in part} for part in (split.train, split.val, split.test)]
    assert not (blocks[0] & blocks[1]) and not (blocks[0] & blocks[2]) and not (blocks[1] & blocks[2])
    assert split.val and split.test and len(split.train) >= 0.6 * 96
    assert split == split_samples(samples, 0.15, 0.15, seed=42, mode="spatial", log=lambda m: None)
    assert split != split_samples(samples, 0.15, 0.15, seed=1, mode="spatial", log=lambda m: None)


def test_spatial_split_from_bounds_matches_the_tile_grid():
    by_tile = split_samples(_samples(8, 8), 0.2, 0.2, 3, "spatial", log=lambda m: None)
    by_bounds = split_samples(_samples(8, 8, with_tile=False, with_bounds=True), 0.2, 0.2, 3, "spatial",
                              log=lambda m: None)
    assert by_bounds.mode == "spatial"
    bounds_samples = _samples(8, 8, with_tile=False, with_bounds=True)
    tile_samples = _samples(8, 8)
    assert [chip_location(s) for s in bounds_samples] == [chip_location(s) for s in tile_samples]
    assert by_tile == by_bounds


def test_small_extent_uses_smaller_blocks_and_says_so():
    messages: list[str] = []
    split = split_samples(_samples(4, 4), 0.15, 0.15, 0, "spatial", log=messages.append)
    assert split.mode == "spatial" and split.block_tiles == 2
    assert any("blocks of 2x2" in m for m in messages)


def test_chips_without_location_fall_back_to_random_with_a_warning():
    messages: list[str] = []
    split = split_samples(_samples(5, 4, with_tile=False), 0.15, 0.15, 0, "spatial", log=messages.append)
    assert split.mode == "random"
    assert any("no tile or bounds" in m and "random split" in m for m in messages)
    assert (len(split.train), len(split.val), len(split.test)) == (14, 3, 3)


def test_split_sizes_never_leave_a_split_empty():
    messages: list[str] = []
    assert split_sizes(3, 0.15, 0.15, messages.append) == (1, 1)
    assert "only 3 chips" in messages[0]
    assert split_sizes(100, 0.15, 0.15, messages.append) == (15, 15)
    assert split_sizes(10, 0.0, 0.0, lambda m: None) == (1, 1)
    with pytest.raises(DatasetError, match="has 2 chip.*at least 3"):
        split_sizes(2, 0.15, 0.15)


def _datamodule(root: Path, **kwargs) -> CampDataModule:
    options = {"batch_size": 4, "split": "random", "seed": 0, "log": lambda m: None} | kwargs
    dm = CampDataModule(root, **options)
    dm.setup()
    return dm


def test_chips_are_decoded_once_and_statistics_come_from_training_chips(tmp_path):
    root = write_synthetic_chips(tmp_path / "generated", cols=4, rows=3, size=32)
    dm = _datamodule(root)
    assert dm.images.dtype == torch.uint8 and dm.images.shape == (12, 3, 32, 32)
    assert dm.masks.shape == (12, 1, 32, 32) and set(dm.masks.unique().tolist()) == {0, 1}
    # The cache holds exactly the pixels of the files.
    name = sorted((root / "chips").iterdir())[5].name
    index = [s.image.name for s in dm.dataset.samples].index(name)
    assert np.array_equal(dm.images[index].numpy().transpose(1, 2, 0), np.asarray(Image.open(root / "chips" / name)))
    train = dm.images[list(dm.split.train)].double() / 255
    np.testing.assert_allclose(dm.mean, train.mean(dim=(0, 2, 3)).numpy(), atol=1e-5)
    np.testing.assert_allclose(dm.std, train.std(dim=(0, 2, 3), unbiased=False).numpy(), atol=1e-5)
    everything = dm.images.double() / 255
    assert not np.allclose(dm.mean, everything.mean(dim=(0, 2, 3)).numpy(), atol=1e-6)
    stats = dm.stats()
    assert stats["chips"] == 12 and stats["split"]["train"] + stats["split"]["val"] + stats["split"]["test"] == 12


def test_batches_are_normalised_on_the_fly(tmp_path):
    dm = _datamodule(write_synthetic_chips(tmp_path / "generated", size=32), augment=False)
    images, masks = next(iter(dm.val_dataloader()))
    assert images.dtype == torch.uint8
    x, y = dm.on_after_batch_transfer((images, masks), 0)
    assert x.dtype == torch.float32 and y.dtype == torch.float32
    mean = torch.tensor(dm.mean).view(1, 3, 1, 1)
    std = torch.tensor(dm.std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (images.float() / 255 - mean) / std)
    torch.testing.assert_close(dm.normalise(images), x)


def test_geometric_augmentation_moves_the_mask_with_the_image():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    mask = (image[0:1] > 128).to(torch.uint8)  # a mask that is a function of the pixels
    seen = set()
    for _ in range(40):
        new_image, new_mask = random_geometry(image, mask)
        assert torch.equal(new_mask, (new_image[0:1] > 128).to(torch.uint8))
        seen.add(new_image.numpy().tobytes())
    assert len(seen) >= 6  # flips and quarter turns produce several orientations


def test_photometric_jitter_changes_brightness_within_bounds():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    jittered = photometric_jitter(x)
    assert jittered.shape == x.shape and float(jittered.min()) >= 0 and float(jittered.max()) <= 1
    shift = (jittered.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3))).abs()
    assert float(shift.max()) > 0.01 and float(shift.max()) <= 0.11


def test_training_loader_augments_only_the_training_split(tmp_path):
    dm = _datamodule(write_synthetic_chips(tmp_path / "generated", size=32), augment=True)
    assert dm.train_dataloader().dataset.augment and not dm.val_dataloader().dataset.augment
    assert not dm.test_dataloader().dataset.augment


def test_masks_drawn_as_0_255_become_0_1(tmp_path):
    plain = _datamodule(write_synthetic_chips(tmp_path / "a", size=32, seed=3))
    scaled = _datamodule(write_synthetic_chips(tmp_path / "b", size=32, seed=3, mask_scale=255))
    assert torch.equal(plain.masks, scaled.masks) and int(scaled.masks.max()) == 1


def test_empty_dataset_folder_is_refused(tmp_path):
    (tmp_path / "empty" / "chips").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images"):
        _datamodule(tmp_path / "empty")


def test_two_chips_are_too_few(tmp_path):
    with pytest.raises(DatasetError, match="2 chip.*at least 3"):
        _datamodule(write_synthetic_chips(tmp_path / "two", cols=2, rows=1))


def test_chips_without_masks_are_refused(tmp_path):
    root = write_synthetic_chips(tmp_path / "nomask", with_masks=False)
    with pytest.raises(DatasetError, match="no mask"):
        _datamodule(root)


def test_a_mask_of_another_size_is_refused_with_its_name(tmp_path):
    root = write_synthetic_chips(tmp_path / "badsize", size=32)
    victim = sorted((root / "labels").iterdir())[2]
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(victim)
    with pytest.raises(DatasetError, match=victim.name):
        _datamodule(root)


def test_downsample_shrinks_chips_and_masks_once(tmp_path):
    root = write_synthetic_chips(tmp_path / "generated", size=32)
    full = _datamodule(root)
    half = _datamodule(root, downsample=2)
    assert half.images.shape == (12, 3, 16, 16) and half.tile_size == 16 and half.stats()["downsample"] == 2
    expected = full.images[:, :, ::2, ::2].float() + full.images[:, :, 1::2, ::2] + full.images[:, :, ::2, 1::2] \
        + full.images[:, :, 1::2, 1::2]
    assert (half.images.float() - expected / 4).abs().max() <= 0.5  # area average, rounded
    assert set(half.masks.unique().tolist()) <= {0, 1}
    assert abs(float(half.masks.float().mean()) - float(full.masks.float().mean())) < 0.05


def test_chip_size_must_suit_the_unet_depth(tmp_path):
    root = write_synthetic_chips(tmp_path / "odd", size=36)
    with pytest.raises(DatasetError, match="36x36.*multiples of 8"):
        _datamodule(root, size_multiple=8)


@pytest.mark.sample_data
def test_spatial_split_of_kampala_has_less_neighbour_leakage_than_random(kampala_dataset):
    from trainer.datasets import discover

    samples = list(discover(kampala_dataset).samples)

    def leaking_pairs(mode: str) -> int:
        split = split_samples(samples, 0.15, 0.15, 42, mode, log=lambda m: None)
        part = {i: name for name, idx in (("train", split.train), ("val", split.val), ("test", split.test))
                for i in idx}
        where = {chip_location(s): part[i] for i, s in enumerate(samples)}
        return sum(1 for (c, r), p in where.items() if p != "train"
                   for n in ((c + 1, r), (c, r + 1), (c - 1, r), (c, r - 1)) if where.get(n) == "train")

    spatial, random_ = leaking_pairs("spatial"), leaking_pairs("random")
    assert spatial < random_ / 2, (spatial, random_)
