"""Training throughput: this data pipeline (chips decoded once into uint8 tensors, normalised per
batch) vs a naive one (decode every chip file at every step, float32), same model, same run.

    .venv/bin/python bench/bench_train.py [--data DATASET] [--steps 10] [--batch-size 8]
    .venv/bin/python bench/bench_train.py --quality [--set epochs=20 --set lr=0.003 ...]

Without --data it fetches the real Kampala sample (../shared/data/kampala) into a temporary folder.
Prints chips/s of the data pipeline alone and of whole training steps, with ratios; on a CUDA GPU
also bf16 mixed precision vs fp32. ``--quality`` instead runs the whole ``camp train`` job with the
DEFAULT TrainConfig (plus ``--set`` overrides) and prints test building IoU, mean IoU and minutes.
Record results in docs/PERFORMANCE.md (Training section).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from trainer.config import TrainConfig  # noqa: E402
from trainer.datamodule import CampDataModule  # noqa: E402
from trainer.datasets import load_image, load_mask  # noqa: E402
from trainer.model import architecture_of, size_multiple  # noqa: E402
from trainer.task import SegmentationTask  # noqa: E402


def fetch_kampala(folder: Path) -> Path:
    from trainer.config import FetchConfig
    from trainer.jobs import run_job
    from trainer.tiling import Tile

    sample = Path(os.environ.get("CAMP_SHARED_DIR", ROOT.parent / "shared")) / "data" / "kampala"
    tiles = sorted(Tile(int(p.parent.name), int(p.stem), 21) for p in (sample / "tiles" / "21").glob("*/*.png"))
    if not tiles:
        sys.exit(f"no Kampala sample at {sample}; pass --data DATASET")
    nw = Tile(min(t.x for t in tiles), min(t.y for t in tiles), 21).bounds_lonlat
    se = Tile(max(t.x for t in tiles), max(t.y for t in tiles), 21).bounds_lonlat
    eps = 1e-7
    out = folder / "kampala"
    run_job("fetch", FetchConfig(bbox=(nw[0] + eps, se[1] + eps, se[2] - eps, nw[3] - eps), zoom=21,
                                 imagery=(sample / "tiles").as_uri() + "/{z}/{x}/{y}.png", labels=str(sample / "labels.geojson"),
                                 out=out, cache_dir=folder / "cache"))
    return out


def cached_batches(dm: CampDataModule, device: str):
    """This pipeline: uint8 tensors from memory, augmented, normalised after the transfer."""
    while True:
        for images, masks in dm.train_dataloader():
            yield dm.on_after_batch_transfer((images.to(device), masks.to(device)), 0)


def naive_batches(dm: CampDataModule, batch_size: int, device: str):
    """Baseline: decode each chip and mask file at every step, normalise in float32 on the CPU."""
    samples = [dm.dataset.samples[i] for i in dm.split.train]
    mean = torch.tensor(dm.mean).view(1, 3, 1, 1)
    std = torch.tensor(dm.std).view(1, 3, 1, 1)
    while True:
        order = torch.randperm(len(samples)).tolist()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chosen = [samples[i] for i in order[start:start + batch_size]]
            images = torch.stack([torch.from_numpy(load_image(s.image)).float() / 255 for s in chosen])
            masks = torch.stack([torch.from_numpy(load_mask(s.mask)).float()[None] for s in chosen])
            yield ((images - mean) / std).to(device), masks.to(device)


def chips_per_second(batches, steps: int, batch_size: int, step_fn=None) -> float:
    for _ in range(2):  # warm-up: allocator, lazy init
        x, y = next(batches)
        if step_fn:
            step_fn(x, y)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        x, y = next(batches)
        if step_fn:
            step_fn(x, y)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - started)


def make_step(config: TrainConfig, device: str, dtype: torch.dtype | None):
    task = SegmentationTask(architecture_of(config), config.lr, config.weight_decay, config.loss).to(device)
    optimizer = torch.optim.AdamW(task.parameters(), lr=config.lr)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(device_type=device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = task.loss_fn(task(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def quality(data: Path, folder: Path, overrides: list[str]) -> None:
    """The default TrainConfig (plus overrides) end to end: what a user gets from `camp train`."""
    from trainer.jobs import run_job
    from trainer.progress import NullProgress

    changes = dict(item.split("=", 1) for item in overrides)
    config = TrainConfig.from_dict({"data": str(data), "out": str(folder / "run"), **changes})
    result = run_job("train", config, NullProgress())
    print(f"# default TrainConfig{' + ' + ', '.join(overrides) if overrides else ''}: "
          f"{result.epochs} epochs in {result.seconds / 60:.1f} min (torch threads {torch.get_num_threads()})")
    print(f"test building IoU {result.metrics['iou']:.3f}, mean IoU {result.metrics['miou']:.3f}, "
          f"F1 {result.metrics['f1']:.3f} at threshold {result.threshold:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--quality", action="store_true", help="train with the default TrainConfig instead")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="TrainConfig override")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or fetch_kampala(Path(tmp))
        if args.quality:
            quality(data, Path(tmp), args.set)
            return
        config = TrainConfig(data=data, out=Path(tmp) / "run", batch_size=args.batch_size)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dm = CampDataModule(data, args.batch_size, seed=config.seed, split=config.split, augment=True,
                            size_multiple=size_multiple(architecture_of(config)), log=lambda m: None)
        dm.setup()
        print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"torch {torch.__version__} threads {torch.get_num_threads()}, device {device}, "
              f"{len(dm.split.train)} training chips {dm.tile_size}px, batch {args.batch_size}, "
              f"U-Net base {config.base_channels} depth {config.depth}")
        results = {
            "data only, cached": chips_per_second(cached_batches(dm, device), args.steps * 5, args.batch_size),
            "data only, naive": chips_per_second(naive_batches(dm, args.batch_size, device), args.steps * 5,
                                                 args.batch_size),
            "train step, cached": chips_per_second(cached_batches(dm, device), args.steps, args.batch_size,
                                                   make_step(config, device, None)),
            "train step, naive": chips_per_second(naive_batches(dm, args.batch_size, device), args.steps,
                                                  args.batch_size, make_step(config, device, None)),
        }
        if device == "cuda" and torch.cuda.is_bf16_supported():
            results["train step, cached, bf16-mixed"] = chips_per_second(
                cached_batches(dm, device), args.steps, args.batch_size, make_step(config, device, torch.bfloat16))
    for name, value in results.items():
        print(f"{name:34s} {value:9.1f} chips/s")
    print(f"data pipeline speed-up (cached / naive): {results['data only, cached'] / results['data only, naive']:.1f}x")
    print(f"training speed-up (cached / naive):      {results['train step, cached'] / results['train step, naive']:.2f}x")
    if "train step, cached, bf16-mixed" in results:
        print(f"bf16-mixed / fp32:                       "
              f"{results['train step, cached, bf16-mixed'] / results['train step, cached']:.2f}x")


if __name__ == "__main__":
    main()
