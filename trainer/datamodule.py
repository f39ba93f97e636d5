"""Chips in memory, split without leakage, normalised and augmented on the fly.

:class:`CampDataModule` reads a dataset folder through :func:`trainer.datasets.discover`, decodes
every chip and mask ONCE into uint8 tensors (decoding PNG/GeoTIFF every step is what makes a naive
pipeline slow: see bench/bench_train.py), splits the chips into train/validation/test and serves
batches of uint8 tensors. The float conversion, the photometric jitter (training only) and the
normalisation happen per batch after the transfer to the device (``on_after_batch_transfer``), so
a GPU receives a quarter of the bytes and does the arithmetic itself.

Splits: ``spatial`` (default) groups chips into square blocks of neighbouring tiles and assigns
whole blocks, so a test chip never has its neighbour in training (neighbours share roofs, shadows
and label quirks, which flatters metrics); ``random`` shuffles chips. Normalisation statistics are
computed on the training split only, on 0-1 pixels, as the model card's contract says.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from .errors import DatasetError

BLOCK_TILES = (4, 2, 1)  # block edge lengths (in chips) tried by the spatial split, largest first
MIN_CHIPS = 3  # one each for training, validation and test
BRIGHTNESS = 0.1  # +- shift on the 0-1 scale
CONTRAST = 0.2  # +- relative contrast change
MERCATOR_HALF_WORLD = 20037508.342789244  # metres from the EPSG:3857 origin to the world's edge


@dataclass(frozen=True)
class Split:
    """Indices of the chips in each split, and how they were chosen."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    mode: str  # "spatial" or "random"
    block_tiles: int | None = None  # block edge in chips for spatial splits

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "block_tiles": self.block_tiles, "train": len(self.train),
                "val": len(self.val), "test": len(self.test)}


def split_sizes(n: int, val_fraction: float, test_fraction: float,
                log: Callable[[str], None] = print) -> tuple[int, int]:
    """Chips for (validation, test): at least one each, and at least one left for training."""
    if n < MIN_CHIPS:
        raise DatasetError(
            f"the dataset has {n} chip(s); training needs at least {MIN_CHIPS} (one each for training, "
            "validation and test), and a useful model 50 or more: fetch a larger extent")
    n_val = max(1, round(n * val_fraction))
    n_test = max(1, round(n * test_fraction))
    while n_val + n_test > n - 1:  # only reachable for tiny datasets
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    if n_val != round(n * val_fraction) or n_test != round(n * test_fraction):
        log(f"only {n} chips: validation takes {n_val} and test {n_test} chip(s); metrics on so few "
            "chips are rough, fetch a larger extent for reliable ones")
    return n_val, n_test


def chip_location(sample: Any) -> tuple[int, int] | None:
    """(column, row) of a chip on its grid: the XYZ tile, else its bounds in chip-size units."""
    if getattr(sample, "tile", None) is not None:
        return (sample.tile.x, sample.tile.y)
    bounds = getattr(sample, "bounds", None)
    if bounds is None:
        return None
    left, bottom, right, top = bounds
    width, height = right - left, top - bottom
    if width <= 0 or height <= 0:
        return None
    # Counted from the Web Mercator origin (north-west corner) so EPSG:3857 chips get their XYZ
    # column/row; the centre avoids edge rounding between neighbours.
    return (math.floor(((left + right) / 2 + MERCATOR_HALF_WORLD) / width),
            math.floor((MERCATOR_HALF_WORLD - (top + bottom) / 2) / height))


def split_samples(samples: Sequence[Any], val_fraction: float, test_fraction: float, seed: int,
                  mode: str = "spatial", log: Callable[[str], None] = print) -> Split:
    """Assign chip indices to train/val/test (deterministic for a seed)."""
    n_val, n_test = split_sizes(len(samples), val_fraction, test_fraction, log)
    if mode == "spatial":
        locations = [chip_location(s) for s in samples]
        if all(loc is not None for loc in locations):
            split = _spatial_split(locations, n_val, n_test, seed)  # type: ignore[arg-type]
            if split is not None:
                if split.block_tiles != BLOCK_TILES[0]:
                    log(f"spatial split: blocks of {split.block_tiles}x{split.block_tiles} chips (the extent "
                        f"is too small for {BLOCK_TILES[0]}x{BLOCK_TILES[0]} blocks in three splits)")
                return split
            log("spatial split: too few neighbouring blocks for three splits; using a random split")
        else:
            missing = sum(loc is None for loc in locations)
            log(f"spatial split: {missing} chip(s) have no tile or bounds; using a random split "
                "(neighbouring chips may land in different splits and flatter the test metrics)")
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    return Split(train=tuple(sorted(order[n_val + n_test:])), val=tuple(sorted(order[n_test:n_test + n_val])),
                 test=tuple(sorted(order[:n_test])), mode="random")


def _spatial_split(locations: list[tuple[int, int]], n_val: int, n_test: int, seed: int) -> Split | None:
    for block in BLOCK_TILES:
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, (col, row) in enumerate(locations):
            groups[(col // block, row // block)].append(index)
        keys = sorted(groups)
        random.Random(seed).shuffle(keys)
        test: list[int] = []
        val: list[int] = []
        train: list[int] = []
        for key in keys:
            target = test if len(test) < n_test else val if len(val) < n_val else train
            target.extend(groups[key])
        if train and val and test:
            return Split(tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)), "spatial", block)
    return None


# ---------------------------------------------------------------- decoding

def decode_samples(samples: Sequence[Any], positive_values: Sequence[int] | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every chip and mask once: uint8 images [N, 3, H, W] and masks [N, 1, H, W] in {0, 1}.

    :func:`trainer.datasets.discover` has already checked that every chip has a mask of its size;
    what is left to check here is that all chips share one size (they are stacked in one tensor).
    """
    from .datasets import load_image, load_mask

    first = torch.as_tensor(load_image(samples[0].image))
    images = torch.empty((len(samples), *first.shape), dtype=torch.uint8)
    masks = torch.empty((len(samples), 1, *first.shape[1:]), dtype=torch.uint8)
    for index, sample in enumerate(samples):
        image = torch.as_tensor(load_image(sample.image))
        if image.shape != first.shape:
            raise DatasetError(f"chip {sample.image} is {tuple(image.shape)} (bands, H, W) but {samples[0].image} is "
                               f"{tuple(first.shape)}; all chips of a dataset must have one size")
        images[index] = image
        masks[index, 0] = torch.as_tensor(load_mask(sample.mask, positive_values))
    return images, masks


def shrink(images: torch.Tensor, masks: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Chips and masks ``factor`` times smaller: area-averaged pixels, masks by majority."""
    import torch.nn.functional as F

    small_images, small_masks = [], []
    for image_chunk, mask_chunk in zip(images.split(256), masks.split(256), strict=True):
        small_images.append(F.avg_pool2d(image_chunk.float(), factor).round().to(torch.uint8))
        small_masks.append((F.avg_pool2d(mask_chunk.float(), factor) >= 0.5).to(torch.uint8))
    return torch.cat(small_images), torch.cat(small_masks)


def band_statistics(images: torch.Tensor, indices: Sequence[int]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and std of 0-1 pixels over ``images[indices]`` (float64 sums, chunked)."""
    bands = images.shape[1]
    total = torch.zeros(bands, dtype=torch.float64)
    squares = torch.zeros(bands, dtype=torch.float64)
    index = torch.as_tensor(list(indices), dtype=torch.long)
    for chunk in index.split(256):
        x = images[chunk].to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    count = len(index) * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(1e-12).sqrt().clamp_min(1e-3)
    return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())


# ---------------------------------------------------------------- serving

class ChipDataset(Dataset):
    """uint8 chips and masks from the in-memory cache; random flips/rot90 when ``augment``."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, indices: Sequence[int], augment: bool) -> None:
        self.images = images
        self.masks = masks
        self.indices = list(indices)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[self.indices[item]]
        mask = self.masks[self.indices[item]]
        if self.augment:
            image, mask = random_geometry(image, mask)
        return image, mask


def random_geometry(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flip and quarter turn for a chip and its mask (seen from above, any
    orientation is as plausible as the one the imagery came in)."""
    if torch.rand(()) < 0.5:
        image, mask = image.flip(-1), mask.flip(-1)
    if image.shape[-1] == image.shape[-2]:
        turns = int(torch.randint(4, ()))
    else:  # a quarter turn would change a non-square chip's shape
        turns = 2 * int(torch.randint(2, ()))
    if turns:
        image, mask = image.rot90(turns, (-2, -1)), mask.rot90(turns, (-2, -1))
    return image.contiguous(), mask.contiguous()


def photometric_jitter(x: torch.Tensor) -> torch.Tensor:
    """Per-chip brightness and contrast changes on 0-1 pixels (sun, haze, sensors differ)."""
    n = x.shape[0]
    shift = (torch.rand(n, 1, 1, 1, device=x.device) * 2 - 1) * BRIGHTNESS
    scale = 1 + (torch.rand(n, 1, 1, 1, device=x.device) * 2 - 1) * CONTRAST
    centre = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - centre) * scale + centre + shift).clamp(0, 1)


class CampDataModule(L.LightningDataModule):
    """Train/val/test loaders over a dataset folder (see the module docstring)."""

    def __init__(self, data: Path, batch_size: int = 8, val_fraction: float = 0.15, test_fraction: float = 0.15,
                 seed: int = 42, split: str = "spatial", augment: bool = True, num_workers: int = 0,
                 size_multiple: int = 1, downsample: int = 1, log: Callable[[str], None] = print) -> None:
        super().__init__()
        self.data = Path(data)
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.split_mode = split
        self.augment = augment
        self.num_workers = num_workers
        self.size_multiple = size_multiple
        self.downsample = downsample
        self.log_message = log
        self.dataset: Any = None
        self.split: Split | None = None
        self.images = torch.empty(0, dtype=torch.uint8)
        self.masks = torch.empty(0, dtype=torch.uint8)
        self.mean: tuple[float, ...] = ()
        self.std: tuple[float, ...] = ()

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return  # decoded already (run_train calls setup before the Trainer does)
        from .datasets import discover

        self.dataset = discover(self.data)
        samples = list(self.dataset.samples)
        split = split_samples(samples, self.val_fraction, self.test_fraction, self.seed, self.split_mode,
                              self.log_message)
        images, masks = decode_samples(samples, self.dataset.positive_values)
        if self.downsample > 1:
            images, masks = shrink(images, masks, self.downsample)
        height, width = images.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            shrunk = f" after --downsample {self.downsample}" if self.downsample > 1 else ""
            raise DatasetError(f"chips are {height}x{width} pixels{shrunk}; this U-Net needs multiples of "
                               f"{self.size_multiple} (2**depth): lower --depth or fetch chips of 256x256")
        self.images, self.masks, self.split = images, masks, split
        self.mean, self.std = band_statistics(images, split.train)

    @property
    def tile_size(self) -> int:
        return int(self.images.shape[-1])

    def stats(self) -> dict[str, Any]:
        """Dataset facts for the model card and MLflow (sizes, split, label share, normalisation)."""
        assert self.split is not None, "call setup() first"
        train = torch.as_tensor(self.split.train)
        return {"data": str(self.data), "chips": int(self.images.shape[0]),
                "chip_size": [int(v) for v in self.images.shape[-2:]], "downsample": self.downsample,
                "split": self.split.to_dict(),
                "positive_fraction_train": round(float(self.masks[train].float().mean()), 6),
                "mean": list(self.mean), "std": list(self.std)}

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> float32 model input ((x/255 - mean) / std), on ``images``' device."""
        return self._standardise(images.float() / 255.0)

    def _standardise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, masks = batch
        x = images.float() / 255.0
        if self.augment and self.trainer is not None and self.trainer.training:
            x = photometric_jitter(x)
        return self._standardise(x), masks.float()

    def _loader(self, indices: Sequence[int], train: bool) -> DataLoader:
        return DataLoader(ChipDataset(self.images, self.masks, indices, augment=train and self.augment),
                          batch_size=self.batch_size, shuffle=train, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        assert self.split is not None
        return self._loader(self.split.train, train=True)

    def val_dataloader(self) -> DataLoader:
        assert self.split is not None
        return self._loader(self.split.val, train=False)

    def test_dataloader(self) -> DataLoader:
        assert self.split is not None
        return self._loader(self.split.test, train=False)
