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
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from servers import TileServer  # noqa: E402

from trainer.config import FetchConfig  # noqa: E402
from trainer.fetch import run_fetch  # noqa: E402
from trainer.progress import NullProgress  # noqa: E402
from trainer.sources.xyz import XyzSource  # noqa: E402
from trainer.tiling import Tile  # noqa: E402

KAMPALA = Path(os.environ.get("CAMP_SHARED_DIR", ROOT.parent / "shared")) / "data" / "kampala"


def tiles_of(tiles_dir: Path) -> list[Tile]:
    return sorted(Tile(int(p.parent.name), int(p.stem), 21) for p in (tiles_dir / "21").glob("*/*.png"))


def kampala_bbox(tiles_dir: Path) -> tuple[tuple[float, float, float, float], int]:
    tiles = tiles_of(tiles_dir)
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


def timed_source(server: TileServer, tiles: list[Tile], cache: Path, workers: int) -> tuple[float, int, int]:
    """Download + decode only (XyzSource.fetch): the network side without chip writing."""
    before = server.tile_requests
    start = time.perf_counter()
    source = XyzSource(server.template, workers=workers, cache_dir=cache)
    got = sum(o.image is not None for o in source.fetch(tiles))
    source.close()
    return time.perf_counter() - start, got, server.tile_requests - before


def bench(label: str, timer: Callable[[Path, int], tuple[float, int, int]], delay: float, workers: int,
          repeat: int, work: Path) -> None:
    """Rows for one latency: cold w=1, cold w=N, cached re-run; best of ``repeat``."""
    names = ("cold, workers=1", f"cold, workers={workers}", "cached re-run")
    rows = {names[0]: min(timer(work / f"c1-{i}", 1) for i in range(repeat)),
            names[1]: min(timer(work / f"cN-{i}", workers) for i in range(repeat))}
    rows[names[2]] = min(timer(work / "cN-0", workers) for _ in range(repeat))
    ratios = {names[0]: (1.0, ""), names[1]: (rows[names[0]][0] / rows[names[1]][0], "vs workers=1"),
              names[2]: (rows[names[1]][0] / rows[names[2]][0], "vs cold")}
    for name, (seconds, chips, requests) in rows.items():
        ratio, note = ratios[name]
        print(f"{label:<14} {delay * 1000:>5.0f}ms {name:<18} {seconds:>7.2f} {chips / seconds:>8.1f} "
              f"{requests:>8} {ratio:>6.2f}x {note}")


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
    header = f"{'what':<14} {'latency':>7} {'case':<18} {'seconds':>7} {'tiles/s':>8} {'requests':>8} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    tiles = tiles_of(KAMPALA / "tiles")
    for delay in (float(d) for d in args.delays.split(",")):
        with tempfile.TemporaryDirectory(prefix="camp-bench-") as tmp, TileServer(KAMPALA / "tiles") as server:
            server.faults.delay_seconds = delay
            work = Path(tmp)
            bench("download only", lambda cache, w, s=server: timed_source(s, tiles, cache, w), delay, args.workers,
                  args.repeat, work / "source")
            bench("run_fetch", lambda cache, w, s=server, d=work: timed_fetch(s, bbox, d, cache, w), delay, args.workers,
                  args.repeat, work / "fetch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
