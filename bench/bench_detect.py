"""Benchmark camp detect on CPU: end-to-end throughput vs the bare model, peak memory vs raster size,
ONNX Runtime vs torch.

    .venv/bin/python bench/bench_detect.py            # 4k x 4k and 16k x 16k rasters
    .venv/bin/python bench/bench_detect.py --quick    # 2k x 2k and 4k x 4k
    .venv/bin/python bench/bench_detect.py --model runs/kampala --sizes 4096

Imagery: the 96 real Kampala tiles (../shared/data/kampala, or $CAMP_SHARED_DIR) stitched into a
3072 x 2048 mosaic and repeated to fill an S x S tiled GeoTIFF (written strip by strip). Model: a
run folder given with --model, or a small U-Net trained here once on the Kampala chips (cached in
the work folder), so the masks and footprints are realistic rather than noise.

Each detect runs in a child process that reports its peak resident memory (VmHWM from
/proc/self/status), so one size's memory does not hide another's. "Pure forward" runs the
predictor's bare model (no reading, normalising, blending, writing) on as many windows as detect
used, one batch at a time: end-to-end / pure forward is the share of time spent on the model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("CAMP_SHARED_DIR", ROOT.parent / "shared")).resolve()
KAMPALA = SHARED / "data" / "kampala"
ZOOM = 21


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------- inputs

def kampala_tiles() -> list:
    from trainer.tiling import Tile

    return sorted(Tile(int(p.parent.name), int(p.stem), ZOOM) for p in (KAMPALA / "tiles" / str(ZOOM)).glob("*/*.png"))


def stitch_mosaic() -> tuple[np.ndarray, object]:
    """The Kampala tiles as one RGB array and its EPSG:3857 transform."""
    from PIL import Image

    from trainer.tiling import TILE_SIZE, Tile

    tiles = kampala_tiles()
    x0, y0 = min(t.x for t in tiles), min(t.y for t in tiles)
    width = (max(t.x for t in tiles) - x0 + 1) * TILE_SIZE
    height = (max(t.y for t in tiles) - y0 + 1) * TILE_SIZE
    rgb = np.zeros((3, height, width), dtype=np.uint8)
    for t in tiles:
        with Image.open(KAMPALA / "tiles" / str(ZOOM) / str(t.x) / f"{t.y}.png") as img:
            rgb[:, (t.y - y0) * TILE_SIZE:(t.y - y0 + 1) * TILE_SIZE,
                (t.x - x0) * TILE_SIZE:(t.x - x0 + 1) * TILE_SIZE] = np.asarray(img.convert("RGB")).transpose(2, 0, 1)
    return rgb, Tile(x0, y0, ZOOM).transform()


def write_repeated(path: Path, size: int, mosaic: np.ndarray, transform: object, strip: int = 1024) -> Path:
    """An S x S tiled GeoTIFF filled with the mosaic repeated, written strip by strip."""
    import rasterio
    from rasterio.windows import Window

    if path.is_file():
        return path
    _, mh, mw = mosaic.shape
    reps_x = math.ceil(size / mw)
    row_band = np.tile(mosaic, (1, 1, reps_x))[:, :, :size]
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:3857", transform=transform, tiled=True, blockxsize=256, blockysize=256,
                       compress="deflate") as dst:
        for row in range(0, size, strip):
            n = min(strip, size - row)
            rows = np.take(row_band, np.arange(row, row + n) % mh, axis=1)
            dst.write(rows, window=Window(0, row, size, n))
    tmp.rename(path)
    return path


def ensure_model(work: Path) -> Path:
    """Train a small U-Net on the Kampala chips once (fetch from file:// tiles + labels file)."""
    from trainer.config import FetchConfig, TrainConfig
    from trainer.jobs import run_job

    run = work / "run"
    if (run / "best_model.onnx").is_file():
        return run
    tiles = kampala_tiles()
    from trainer.tiling import Tile

    nw = Tile(min(t.x for t in tiles), min(t.y for t in tiles), ZOOM).bounds_lonlat
    se = Tile(max(t.x for t in tiles), max(t.y for t in tiles), ZOOM).bounds_lonlat
    eps = 1e-7
    bbox = (nw[0] + eps, se[1] + eps, se[2] - eps, nw[3] - eps)
    template = (KAMPALA / "tiles").as_uri() + "/{z}/{x}/{y}.png"
    print("training a small benchmark model on the Kampala chips (once) ...", flush=True)
    run_job("fetch", FetchConfig(bbox=bbox, zoom=ZOOM, imagery=template, labels=str(KAMPALA / "labels.geojson"),
                                 out=work / "dataset", overwrite=True))
    run_job("train", TrainConfig(data=work / "dataset", out=run, epochs=8, batch_size=8, base_channels=8, depth=3,
                                 accelerator="cpu", devices="1", tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
                                 seed=7, overwrite=True))
    return run


# ---------------------------------------------------------------- child processes

def child_detect(args: argparse.Namespace) -> None:
    from trainer.config import DetectConfig
    from trainer.detect import run_detect
    from trainer.progress import NullProgress

    t0, c0 = time.perf_counter(), time.process_time()
    result = run_detect(DetectConfig(model=args.model, imagery=args.imagery, out=Path(args.out), backend=args.backend,
                                     batch_size=args.batch_size, overwrite=True), NullProgress())
    wall = time.perf_counter() - t0
    summary = json.loads(result.summary_path.read_text())
    print(json.dumps({"wall_s": wall, "cpu_s": time.process_time() - c0, "peak_rss_mb": peak_rss_mb(), "windows": summary["windows"]["count"],
                      "pixels": summary["pixels"]["total"], "footprints": result.footprint_count,
                      "timings": summary["timings_s"]}))


def child_forward(args: argparse.Namespace) -> None:
    """The bare model on ``windows`` real windows of the mosaic, ``batch_size`` at a time."""
    from trainer.predictor import load_predictor

    predictor = load_predictor(args.model, args.backend)
    tile = predictor.card.tile_size
    mosaic, _ = stitch_mosaic()
    rng = np.random.default_rng(0)
    batch = np.stack([mosaic[:, r:r + tile, c:c + tile] for r, c in zip(
        rng.integers(0, mosaic.shape[1] - tile, args.batch_size),
        rng.integers(0, mosaic.shape[2] - tile, args.batch_size), strict=True)])
    x = predictor.normalise(batch)
    predictor.forward_normalised(x)  # warm-up (ORT graph optimisation, torch allocator)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(math.ceil(args.windows / args.batch_size)):
        predictor.forward_normalised(x)
    print(json.dumps({"forward_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                      "peak_rss_mb": peak_rss_mb()}))


def run_child(*argv: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"child {' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2k and 4k rasters instead of 4k and 16k")
    parser.add_argument("--sizes", default=None, help="raster sizes in pixels, e.g. 4096,16384")
    parser.add_argument("--model", default=None, help="run folder (default: train a small one once)")
    parser.add_argument("--backends", default="onnx,torch")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--memory-only", action="store_true", help="only detect with the first backend (no forward)")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "camp-bench-detect")
    parser.add_argument("--child", choices=["detect", "forward"], help=argparse.SUPPRESS)
    parser.add_argument("--imagery", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--windows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "detect":
        return child_detect(args)
    if args.child == "forward":
        return child_forward(args)
    if not KAMPALA.is_dir():
        raise SystemExit(f"the Kampala sample is not at {KAMPALA}; set CAMP_SHARED_DIR")
    sizes = [int(s) for s in (args.sizes or ("2048,4096" if args.quick else "4096,16384")).split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model or str(ensure_model(args.work))
    mosaic, transform = stitch_mosaic()
    rows = []
    for size in sizes:
        raster = write_repeated(args.work / f"kampala_{size}.tif", size, mosaic, transform)
        for backend in args.backends.split(","):
            # The second size runs only the first backend: memory is the point there, not the runtime.
            if size != sizes[0] and backend != args.backends.split(",")[0]:
                continue
            d = run_child("--child", "detect", "--model", model, "--imagery", str(raster), "--backend", backend,
                          "--out", str(args.work / f"out_{size}_{backend}"), "--batch-size", str(args.batch_size))
            if args.memory_only:
                print(json.dumps({"size": size, "backend": backend, "windows": d["windows"],
                                  "detect_s": round(d["wall_s"], 1), "detect_cpu_s": round(d["cpu_s"], 1),
                                  "peak_rss_mb": round(d["peak_rss_mb"]), "footprints": d["footprints"]}), flush=True)
                continue
            f = run_child("--child", "forward", "--model", model, "--backend", backend, "--windows", str(d["windows"]),
                          "--batch-size", str(args.batch_size))
            mpx = d["pixels"] / 1e6
            row = {"size": size, "backend": backend, "megapixels": round(mpx, 1), "windows": d["windows"],
                   "detect_s": round(d["wall_s"], 1), "detect_mpx_s": round(mpx / d["wall_s"], 2),
                   "forward_s": round(f["forward_s"], 1), "forward_mpx_s": round(mpx / f["forward_s"], 2),
                   "share_of_forward": round(f["forward_s"] / d["wall_s"], 2),
                   "detect_cpu_s": round(d["cpu_s"], 1), "forward_cpu_s": round(f["cpu_s"], 1),
                   "cpu_share_of_forward": round(f["cpu_s"] / d["cpu_s"], 2),
                   "peak_rss_mb": round(d["peak_rss_mb"]), "forward_peak_rss_mb": round(f["peak_rss_mb"]),
                   "footprints": d["footprints"], "stages_s": d["timings"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.memory_only:
        return None
    print()
    print("| raster | backend | windows | detect s | detect Mpx/s | forward s | forward Mpx/s | forward / detect "
          "(wall) | forward / detect (CPU) | peak RSS MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['size']}x{r['size']} | {r['backend']} | {r['windows']} | {r['detect_s']} | {r['detect_mpx_s']} | "
              f"{r['forward_s']} | {r['forward_mpx_s']} | {r['share_of_forward']:.0%} | {r['cpu_share_of_forward']:.0%} "
              f"| {r['peak_rss_mb']} |")
    (args.work / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
