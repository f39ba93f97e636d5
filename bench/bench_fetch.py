"""Fetch throughput: concurrent vs one-at-a-time downloads, and a cached re-run vs a cold one.

Serves the real Kampala tiles (96 zoom-21 PNGs) from the loopback TileServer of the tests, with an
added per-request latency to emulate a remote tile server, and times the whole ``run_fetch`` job
(download, decode, rasterise labels, write GeoTIFF chips and masks). Run from the repository root:

    .venv/bin/python bench/bench_fetch.py [--delays 0,0.03] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from servers import TileServer  # noqa: E402

from trainer.config import FetchConfig  # noqa: E402
from trainer.fetch import run_fetch  # noqa: E402
from trainer.progress import NullProgress  # noqa: E402
from trainer.tiling import Tile  # noqa: E402

KAMPALA = Path(os.environ.get("CAMP_SHARED_DIR", ROOT.parent / "shared")) / "data" / "kampala"


def kampala_bbox(tiles_dir: Path) -> tuple[tuple[float, float, float, float], int]:
    tiles = [Tile(int(p.parent.name), int(p.stem), 21) for p in (tiles_dir / "21").glob("*/*.png")]
    nw = Tile(min(t.x for t in tiles), min(t.y for t in tiles), 21).bounds_lonlat
    se = Tile(max(t.x for t in tiles), max(t.y for t in tiles), 21).bounds_lonlat
    eps = 1e-7
    return (nw[0] + eps, se[1] + eps, se[2] - eps, nw[3] - eps), len(tiles)


def timed_fetch(server: TileServer, bbox, work: Path, cache: Path, workers: int) -> tuple[float, int, int]:
    out = work / "ds"
    shutil.rmtree(out, ignore_errors=True)
    before = server.tile_requests
    start = time.perf_counter()
    result = run_fetch(FetchConfig(bbox=bbox, zoom=21, imagery=server.template, out=out, labels="none",
                                   workers=workers, cache_dir=cache), NullProgress())
    seconds = time.perf_counter() - start
    return seconds, result.chips, server.tile_requests - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delays", default="0,0.03", help="per-request latencies in seconds")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs per case")
    args = parser.parse_args()
    if not KAMPALA.is_dir():
        print(f"sample data not found at {KAMPALA} (set CAMP_SHARED_DIR)", file=sys.stderr)
        return 1
    bbox, count = kampala_bbox(KAMPALA / "tiles")
    print(f"camp fetch benchmark: {count} real 256x256 PNG tiles (zoom 21), loopback TileServer")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    header = f"{'latency':>8} {'case':<28} {'seconds':>8} {'tiles/s':>8} {'requests':>9} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for delay in (float(d) for d in args.delays.split(",")):
        with tempfile.TemporaryDirectory(prefix="camp-bench-") as tmp, TileServer(KAMPALA / "tiles") as server:
            work = Path(tmp)
            server.faults.delay_seconds = delay
            rows = {}
            for name, workers in (("cold, workers=1", 1), (f"cold, workers={args.workers}", args.workers)):
                runs = []
                for i in range(args.repeat):
                    runs.append(timed_fetch(server, bbox, work, work / f"cache-{name}-{i}", workers))
                rows[name] = min(runs)
            warm_cache = work / f"cache-cold, workers={args.workers}-0"
            rows["cached re-run"] = min(timed_fetch(server, bbox, work, warm_cache, args.workers)
                                        for _ in range(args.repeat))
            serial = rows["cold, workers=1"][0]
            cold = rows[f"cold, workers={args.workers}"][0]
            ratios = {"cold, workers=1": 1.0, f"cold, workers={args.workers}": serial / cold,
                      "cached re-run": cold / rows["cached re-run"][0]}
            for name, (seconds, chips, requests) in rows.items():
                note = "x vs w=1" if "workers=" in name and name != "cold, workers=1" else (
                    "x vs cold" if name == "cached re-run" else "")
                print(f"{delay * 1000:>6.0f}ms {name:<28} {seconds:>8.2f} {chips / seconds:>8.1f} {requests:>9} "
                      f"{ratios[name]:>6.2f}x {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
