"""Tiled, blended, streaming inference over a local raster or an XYZ extent (``camp detect``).

Data flow: imagery -> (XYZ: tiles of the extent into a mosaic GeoTIFF) -> work grid (the input
grid, or a WarpedVRT at the model's ground resolution) -> row strips of overlapping windows ->
batches -> probabilities blended with a Hann weight (trainer.windows) -> finished rows written
with windowed writes -> (back onto the input grid if resampled) -> probability.tif (COG),
mask.tif (COG), footprints.gpkg, summary.json.

Memory does not grow with the raster: one strip of input (tile rows x width), one strip-sized
blend buffer and one block of output rows are held at a time.

Output grid: the input raster's own grid and CRS (windowed to --bbox when given), or EPSG:3857 at
the tile grid for an XYZ extent. When the input's ground resolution differs from the model's by
more than RESAMPLE_TOLERANCE, the model runs on a resampled copy (read through a WarpedVRT) and
its probabilities are resampled back onto the input grid before the mask is thresholded.
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import DetectConfig
from .errors import InputError, OutputExistsError, OutputNotWritableError, TileFetchError
from .fileio import staged_dir, write_json
from .modelcard import ModelCard
from .progress import Progress, SubProgress, check_cancelled
from .vectorize import MASK_NODATA, FootprintCollector, write_footprints
from .windows import StripBlender, WindowGrid

PROBABILITY_NODATA = {"uint8": 255, "float32": -1.0}
# Relative difference of ground resolution below which the input is used as is.
RESAMPLE_TOLERANCE = 0.05
# GDAL's block cache defaults to 5% of RAM and fills up while large outputs are written; a fixed
# cap keeps detect's memory independent of the raster's size (MB).
GDAL_CACHE_MB = 128
# Refuse XYZ extents larger than this many tiles (about 1.3 gigapixels at 256 px).
MAX_XYZ_TILES = 20000
GTIFF_OPTIONS = {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}


# ---------------------------------------------------------------- result

@dataclass(frozen=True)
class DetectResult:
    out: Path
    probability: Path
    mask: Path
    footprints: Path
    summary_path: Path
    footprint_count: int
    total_area_m2: float
    valid_pixels: int
    positive_pixels: int
    threshold: float
    backend: str
    device: str
    grid: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}

    def summary(self) -> str:
        return "\n".join([
            f"{self.footprint_count} footprints, {self.total_area_m2:,.1f} m2 in total "
            f"({self.positive_pixels:,} of {self.valid_pixels:,} pixels at threshold {self.threshold:.2f})",
            f"grid: {self.grid['width']} x {self.grid['height']} px, {self.grid['crs']}, "
            f"{self.grid['ground_resolution_m']:.3f} m/px; model ran with {self.backend} on {self.device}",
            f"written to {self.out}: probability.tif, mask.tif, footprints.gpkg, summary.json",
            f"time: {self.timings.get('total', 0):.1f} s",
        ])


# ---------------------------------------------------------------- grids and input

@dataclass(frozen=True)
class Grid:
    crs: Any  # rasterio CRS
    transform: Any  # affine.Affine
    width: int
    height: int

    def to_dict(self, ground_resolution_m: float) -> dict[str, Any]:
        t = self.transform
        return {"crs": self.crs.to_string(), "transform": [t.a, t.b, t.c, t.d, t.e, t.f],
                "width": self.width, "height": self.height, "ground_resolution_m": ground_resolution_m}


def ground_resolution(grid: Grid) -> float:
    """True ground metres per pixel at the grid's centre (geodesic, any CRS)."""
    from pyproj import Geod, Transformer

    to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    t = grid.transform
    cx, cy = grid.width / 2, grid.height / 2
    pts = [t @ (cx, cy), t @ (cx + 1, cy), t @ (cx, cy + 1)]
    lons, lats = to_lonlat.transform([p[0] for p in pts], [p[1] for p in pts])
    geod = Geod(ellps="WGS84")
    _, _, dx = geod.inv(lons[0], lats[0], lons[1], lats[1])
    _, _, dy = geod.inv(lons[0], lats[0], lons[2], lats[2])
    return float((dx + dy) / 2)


@dataclass
class StripReader:
    """Reads full-width row strips of the work grid as uint8 bands + validity."""

    dataset: Any  # rasterio dataset or WarpedVRT, whose pixel grid contains the work grid
    row_off: int
    col_off: int
    width: int
    bands: list[int]
    scale: float | None  # multiply to reach 0-255 (None: already uint8)

    def read(self, row: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        from rasterio.windows import Window

        window = Window(self.col_off, self.row_off + row, self.width, height)
        pixels = self.dataset.read(self.bands, window=window)
        valid = self.dataset.dataset_mask(window=window) > 0
        if self.scale is not None:
            pixels = np.clip(pixels.astype(np.float32) * self.scale + 0.5, 0, 255).astype(np.uint8)
        return pixels, valid


def _select_bands(src: Any, config: DetectConfig, card: ModelCard, name: str) -> list[int]:
    need = card.in_channels
    wanted = ", ".join(card.bands)
    if config.bands is not None:
        if len(config.bands) != need:
            raise InputError(f"the model takes {need} bands ({wanted}); --bands {','.join(map(str, config.bands))} "
                             f"selects {len(config.bands)}")
        if max(config.bands) > src.count:
            raise InputError(f"--bands {','.join(map(str, config.bands))} asks for band {max(config.bands)} "
                             f"but {name} has {src.count} band(s)")
        return list(config.bands)
    if src.count < need:
        raise InputError(f"the model takes {need} bands ({wanted}) but {name} has {src.count}; give an RGB "
                         f"raster, or repeat a band with --bands {','.join(['1'] * need)}")
    return list(range(1, need + 1))


def _value_scale(src: Any, bands: list[int]) -> float | None:
    """Factor that maps the data's actual maximum (read on a decimated copy) to 255; None for uint8."""
    if src.dtypes[bands[0] - 1] == "uint8":
        return None
    step = max(1, max(src.height, src.width) // 1024)
    sample = src.read(bands, out_shape=(len(bands), max(1, src.height // step), max(1, src.width // step)),
                      masked=True)
    high = float(sample.max()) if sample.count() else 0.0
    if not math.isfinite(high) or high <= 0:
        high = float(np.iinfo(src.dtypes[0]).max) if np.issubdtype(src.dtypes[0], np.integer) else 1.0
    if np.issubdtype(src.dtypes[0], np.integer) and high <= 255:
        return 1.0  # 8-bit values stored in a wider type
    if not np.issubdtype(src.dtypes[0], np.integer) and high <= 1.0:
        high = 1.0  # reflectance 0-1
    return 255.0 / high


def _bbox_window(src: Any, config: DetectConfig, name: str) -> Any:
    """Pixel window of --bbox in the raster (outward to whole pixels); the whole raster without bbox."""
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window

    full = Window(0, 0, src.width, src.height)
    if config.bbox is None:
        return full
    left, bottom, right, top = transform_bounds(config.bbox_crs, src.crs, *config.bbox, densify_pts=21)
    inv = ~src.transform
    cols, rows = zip(*(inv @ (x, y) for x, y in ((left, top), (right, top), (left, bottom), (right, bottom))), strict=True)
    c0, c1 = max(0, math.floor(min(cols) + 1e-6)), min(src.width, math.ceil(max(cols) - 1e-6))
    r0, r1 = max(0, math.floor(min(rows) + 1e-6)), min(src.height, math.ceil(max(rows) - 1e-6))
    if c1 <= c0 or r1 <= r0:
        extent = ",".join(f"{v:.6f}" for v in transform_bounds(src.crs, config.bbox_crs, *src.bounds))
        raise InputError(f"bbox {','.join(map(str, config.bbox))} ({config.bbox_crs}) does not overlap {name}, "
                         f"whose extent is {extent}; give a bbox inside the raster or leave it out")
    return Window(c0, r0, c1 - c0, r1 - r0)


def _open_raster(path: Path, stack: ExitStack) -> Any:
    import rasterio
    from rasterio.errors import RasterioIOError

    if not path.is_file():
        raise InputError(f"imagery {path} does not exist; give a GeoTIFF/VRT or an XYZ URL template with {{z}}/{{x}}/{{y}}")
    try:
        src = stack.enter_context(rasterio.open(path))
    except RasterioIOError as exc:
        raise InputError(f"cannot open imagery {path} as a raster ({exc}); give a GeoTIFF, COG or VRT") from None
    if src.crs is None:
        raise InputError(f"imagery {path} has no CRS; georeference it first (e.g. gdal_edit.py -a_srs EPSG:32636 {path.name})")
    return src


# ---------------------------------------------------------------- XYZ extents

def _xyz_mosaic(config: DetectConfig, zoom: int, path: Path, progress: Progress) -> int:
    """Fetch the tiles of the extent at ``zoom`` into an RGBA GeoTIFF (alpha: tile present); tile count."""
    import rasterio
    from rasterio.warp import transform_bounds

    from .sources.xyz import XyzSource
    from .tiling import TILE_SIZE, WEB_MERCATOR, Tile, tiles_for_bbox

    if config.bbox is None:
        raise InputError("an XYZ URL template needs an extent: give --bbox W,S,E,N")
    lonlat = transform_bounds(config.bbox_crs, "EPSG:4326", *config.bbox)
    tiles = tiles_for_bbox(lonlat, zoom, max_tiles=MAX_XYZ_TILES)
    x0, y0 = min(t.x for t in tiles), min(t.y for t in tiles)
    width = (max(t.x for t in tiles) - x0 + 1) * TILE_SIZE
    height = (max(t.y for t in tiles) - y0 + 1) * TILE_SIZE
    transform = Tile(x0, y0, zoom).transform()  # the north-west tile's origin and pixel size
    profile = {**GTIFF_OPTIONS, "width": width, "height": height, "count": 4, "dtype": "uint8",
               "crs": WEB_MERCATOR, "transform": transform, "photometric": "rgb", "alpha": "yes"}
    source = XyzSource(config.imagery)
    found = problems = 0
    try:
        with rasterio.open(path, "w", **profile) as dst:
            for done, outcome in enumerate(source.fetch(tiles), start=1):
                check_cancelled(progress)
                progress.report(done / len(tiles), f"tile {done}/{len(tiles)}")
                if outcome.image is None:
                    problems += outcome.status == "failed"
                    continue
                found += 1
                window = rasterio.windows.Window((outcome.tile.x - x0) * TILE_SIZE,
                                                 (outcome.tile.y - y0) * TILE_SIZE, TILE_SIZE, TILE_SIZE)
                alpha = outcome.image.valid.astype(np.uint8)[None] * 255
                dst.write(np.concatenate([outcome.image.rgb, alpha]), window=window)
    finally:
        source.close()
    if not found:
        raise TileFetchError(f"no imagery tiles for the extent {','.join(map(str, config.bbox))} at zoom {zoom} "
                             f"from {config.imagery} ({len(tiles)} tiles tried, {problems} failed); check the "
                             "template, the extent and the zoom (--zoom)")
    return len(tiles)


# ---------------------------------------------------------------- writing

class OutputWriter:
    """Takes finished rows of blended probability (NaN = nodata) and writes probability, mask and
    footprints with windowed writes; counts pixels."""

    def __init__(self, folder: Path, grid: Grid, dtype: str, threshold: float, footprints: FootprintCollector) -> None:
        import rasterio

        self.grid = grid
        self.dtype = dtype
        self.threshold = threshold
        self.footprints = footprints
        self.valid_pixels = 0
        self.positive_pixels = 0
        base = {**GTIFF_OPTIONS, "width": grid.width, "height": grid.height, "count": 1,
                "crs": grid.crs, "transform": grid.transform}
        self.probability_path = folder / "probability.tif"
        self.mask_path = folder / "mask.tif"
        self._prob = rasterio.open(self.probability_path, "w", **base, dtype=dtype, nodata=PROBABILITY_NODATA[dtype])
        self._mask = rasterio.open(self.mask_path, "w", **base, dtype="uint8", nodata=MASK_NODATA)

    def write(self, row: int, probability: np.ndarray) -> None:
        from rasterio.windows import Window

        nodata = np.isnan(probability)
        mask = np.where(nodata, MASK_NODATA, probability >= self.threshold).astype(np.uint8)
        if self.dtype == "uint8":
            # 255 is nodata, so certainty is stored as 254 (value / 255 is the probability).
            stored = np.where(nodata, 255, np.clip(np.rint(np.nan_to_num(probability) * 255), 0, 254)).astype(np.uint8)
        else:
            stored = np.where(nodata, PROBABILITY_NODATA["float32"], probability).astype(np.float32)
        window = Window(0, row, self.grid.width, probability.shape[0])
        self._prob.write(stored, 1, window=window)
        self._mask.write(mask, 1, window=window)
        self.valid_pixels += int((~nodata).sum())
        self.positive_pixels += int((mask == 1).sum())
        self.footprints.add(row, mask, probability)

    def close(self) -> None:
        self._prob.close()
        self._mask.close()


def to_cog(src_path: Path, dst_path: Path, resampling: str) -> None:
    """Rewrite a tiled GeoTIFF as a Cloud Optimized GeoTIFF with overviews (GDAL's COG driver)."""
    from rasterio.shutil import copy

    copy(str(src_path), str(dst_path), driver="COG", BLOCKSIZE=256, COMPRESS="DEFLATE",
         OVERVIEW_RESAMPLING=resampling, OVERVIEWS="AUTO")


# ---------------------------------------------------------------- the job

def _check_out(config: DetectConfig) -> None:
    out = config.out
    if out.exists() and not out.is_dir():
        raise OutputNotWritableError(f"output {out} is a file, not a folder; choose a folder for --out")
    if out.is_dir() and any(out.iterdir()) and not config.overwrite:
        raise OutputExistsError(f"output folder {out} already holds results; pass --overwrite to replace "
                                "them or choose another --out")


def _zoom_for(config: DetectConfig, card: ModelCard) -> int:
    zoom = config.zoom if config.zoom is not None else card.zoom
    if zoom is None:
        raise InputError("the model card records no training zoom; give --zoom for the XYZ source")
    return zoom


@dataclass
class _Input:
    """The opened imagery: dataset, bands, the --bbox window of it and its grid (the output grid)."""

    src: Any
    bands: list[int]
    window: Any
    grid: Grid
    ground_resolution_m: float
    info: dict[str, Any]


def _open_input(config: DetectConfig, card: ModelCard, work: Path, stack: ExitStack, progress: Progress,
                timings: dict[str, float]) -> _Input:
    """Open the raster, or fetch the XYZ extent into a mosaic first; check bands, CRS and bbox."""
    from .tiling import is_tile_template

    if is_tile_template(config.imagery):
        t0 = time.perf_counter()
        zoom = _zoom_for(config, card)
        path = work / "mosaic.tif"
        tiles = _xyz_mosaic(config, zoom, path, progress)
        timings["fetch"] = time.perf_counter() - t0
        name = config.imagery
        info: dict[str, Any] = {"imagery": config.imagery, "kind": "xyz", "zoom": zoom, "tiles": tiles}
    else:
        path = Path(config.imagery).expanduser()
        name = str(path)
        info = {"imagery": name, "kind": "raster"}
    info.update(bbox=list(config.bbox) if config.bbox else None, bbox_crs=config.bbox_crs)
    src = _open_raster(path, stack)
    bands = _select_bands(src, config, card, name)
    window = _bbox_window(src, config, name)
    grid = Grid(src.crs, src.window_transform(window), int(window.width), int(window.height))
    resolution = ground_resolution(grid)
    info.update(bands=bands, dtype=src.dtypes[bands[0] - 1], ground_resolution_m=resolution)
    return _Input(src, bands, window, grid, resolution, info)


def run_detect(config: DetectConfig, progress: Progress) -> DetectResult:
    """Run the model over ``config.imagery`` and write the detect folder ``config.out``."""
    from .predictor import load_predictor
    from .tiling import is_tile_template

    started = time.perf_counter()
    _check_out(config)
    predictor = load_predictor(config.model, config.backend, config.device)
    card = predictor.card
    threshold = config.threshold if config.threshold is not None else card.threshold
    timings = {"load_model": time.perf_counter() - started}
    fetch_share = 0.2 if is_tile_template(config.imagery) else 0.0
    with staged_dir(config.out) as stage, ExitStack() as stack:
        import rasterio

        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB))
        work = stage / ".work"
        work.mkdir()
        source = _open_input(config, card, work, stack, SubProgress(progress, 0.0, fetch_share, "fetch: "), timings)
        grid = source.grid
        resample = bool(config.resample and card.resolution_m
                        and abs(source.ground_resolution_m / card.resolution_m - 1) > RESAMPLE_TOLERANCE)
        footprints = FootprintCollector(grid.transform, grid.crs, grid.height, config.min_area_m2, config.simplify_m,
                                        source.ground_resolution_m / abs(grid.transform.a),
                                        source.ground_resolution_m ** 2)

        def new_writer() -> OutputWriter:
            writer = OutputWriter(work, grid, config.probability_dtype, threshold, footprints)
            stack.callback(writer.close)  # on error or cancel too; closing twice is harmless
            return writer

        if resample:
            reader, work_grid = _resampled_reader(source, stack, source.ground_resolution_m / card.resolution_m)
            sink: Any = _FloatSink(work / "work_probability.tif", work_grid)
            stack.callback(sink.close)
        else:
            reader = StripReader(source.src, int(source.window.row_off), int(source.window.col_off), grid.width,
                                 source.bands, None)
            work_grid, sink = grid, new_writer()
        reader.scale = _value_scale(source.src, source.bands)
        t0 = time.perf_counter()
        timings.update(_infer(predictor, reader, work_grid, sink, config,
                              SubProgress(progress, fetch_share, 0.9, "detect: ")))
        sink.close()
        timings["infer_total"] = time.perf_counter() - t0
        writer = sink
        if resample:
            t0 = time.perf_counter()
            writer = new_writer()
            _resample_back(sink.path, grid, writer, progress)
            writer.close()
            timings["resample_back"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        found = footprints.finish()
        write_footprints(stage / "footprints.gpkg", found, grid.crs)
        timings["vectorize"] = time.perf_counter() - t0
        progress.report(0.95, "writing Cloud Optimized GeoTIFFs")
        t0 = time.perf_counter()
        to_cog(writer.probability_path, stage / "probability.tif", "AVERAGE")
        to_cog(writer.mask_path, stage / "mask.tif", "NEAREST")
        timings["cog"] = time.perf_counter() - t0
        stack.close()
        _remove_tree(work)
        timings["total"] = time.perf_counter() - started
        timings = {k: round(v, 3) for k, v in timings.items()}
        summary = _summary(config, predictor, threshold, source, work_grid, resample, writer, found, timings)
        write_json(stage / "summary.json", summary)
    progress.report(1.0, f"{found.count} footprints")
    out = config.out
    return DetectResult(out, out / "probability.tif", out / "mask.tif", out / "footprints.gpkg", out / "summary.json",
                        found.count, found.total_area_m2, writer.valid_pixels, writer.positive_pixels, threshold,
                        predictor.backend, predictor.device, summary["grid"], timings)


def _summary(config: DetectConfig, predictor: Any, threshold: float, source: _Input, work_grid: Grid,
             resample: bool, writer: OutputWriter, found: Any, timings: dict[str, float]) -> dict[str, Any]:
    card = predictor.card
    grid = source.grid
    return {
        "footprints": found.count, "total_area_m2": round(found.total_area_m2, 3),
        "pixels": {"total": grid.width * grid.height, "valid": writer.valid_pixels,
                   "positive": writer.positive_pixels},
        "threshold": threshold,
        "model": {"name": card.name, "source": str(predictor.source), "tile_size": card.tile_size,
                  "resolution_m": card.resolution_m, "zoom": card.zoom, "card_threshold": card.threshold},
        "backend": predictor.backend, "device": predictor.device,
        "input": source.info, "grid": grid.to_dict(source.ground_resolution_m),
        "work_grid": {**work_grid.to_dict(card.resolution_m if resample else source.ground_resolution_m),
                      "resampled": resample},
        "windows": {"tile": card.tile_size, "overlap": config.overlap, "batch_size": config.batch_size,
                    "count": WindowGrid(work_grid.height, work_grid.width, card.tile_size, config.overlap).count},
        "probability_encoding": ("uint8: probability = value / 255, 255 = nodata" if config.probability_dtype == "uint8"
                                 else "float32: probability 0-1, -1 = nodata"),
        "timings_s": timings,
    }


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _infer(predictor: Any, reader: StripReader, grid: Grid, sink: Any, config: DetectConfig,
           progress: Progress) -> dict[str, float]:
    """Strip by strip: read, batch windows through the model, blend, hand finished rows to ``sink``."""
    tile = predictor.card.tile_size
    windows = WindowGrid(grid.height, grid.width, tile, config.overlap)
    blender = StripBlender(windows)
    times = {"read": 0.0, "model": 0.0, "blend_write": 0.0}
    done = 0
    for strip, strip_windows in windows.strips():
        check_cancelled(progress)
        t0 = time.perf_counter()
        row = windows.row_starts[strip]
        height = strip_windows[0].height
        pixels, valid = reader.read(row, height)
        times["read"] += time.perf_counter() - t0
        for start in range(0, len(strip_windows), config.batch_size):
            batch_windows = strip_windows[start:start + config.batch_size]
            batch = np.zeros((len(batch_windows), pixels.shape[0], tile, tile), dtype=np.uint8)
            for i, w in enumerate(batch_windows):
                batch[i, :, :w.height, :w.width] = pixels[:, :, w.col:w.col + w.width]
            t0 = time.perf_counter()
            probabilities = predictor.predict(batch)
            times["model"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            for w, p in zip(batch_windows, probabilities, strict=True):
                blender.add(w, p)
            times["blend_write"] += time.perf_counter() - t0
            done += len(batch_windows)
            progress.report(done / windows.count, f"window {done}/{windows.count}")
            check_cancelled(progress)
        t0 = time.perf_counter()
        first, rows = blender.finish(strip)
        top = first - row
        rows[~valid[top:top + rows.shape[0]]] = np.nan
        sink.write(first, rows)
        times["blend_write"] += time.perf_counter() - t0
    return times


# ---------------------------------------------------------------- resampling to the model's resolution

def _resampled_reader(source: _Input, stack: ExitStack, factor: float) -> tuple[StripReader, Grid]:
    """A reader on a grid over the same extent at the model's resolution (``factor`` = input/model
    ground resolution: < 1 means the input is finer than the model's and is coarsened)."""
    from affine import Affine
    from rasterio.enums import MaskFlags, Resampling
    from rasterio.vrt import WarpedVRT

    src, out_grid = source.src, source.grid
    width = max(1, round(out_grid.width * factor))
    height = max(1, round(out_grid.height * factor))
    transform = out_grid.transform @ Affine.scale(out_grid.width / width, out_grid.height / height)
    work_grid = Grid(out_grid.crs, transform, width, height)
    # Without nodata/alpha/mask in the source, an alpha band marks pixels outside it.
    has_mask = MaskFlags.all_valid not in src.mask_flag_enums[source.bands[0] - 1]
    vrt = stack.enter_context(WarpedVRT(
        src, crs=src.crs, transform=transform, width=width, height=height,
        resampling=Resampling.average if factor < 1 else Resampling.bilinear, add_alpha=not has_mask))
    return StripReader(vrt, 0, 0, width, source.bands, None), work_grid


class _FloatSink:
    """Work-grid probabilities (float32, NaN nodata) in a temporary tiled GeoTIFF."""

    def __init__(self, path: Path, grid: Grid) -> None:
        import rasterio

        self.path = path
        self.grid = grid
        self._dst = rasterio.open(path, "w", **GTIFF_OPTIONS, width=grid.width, height=grid.height, count=1,
                                  dtype="float32", nodata=float("nan"), crs=grid.crs, transform=grid.transform)

    def write(self, row: int, probability: np.ndarray) -> None:
        from rasterio.windows import Window

        self._dst.write(probability.astype(np.float32), 1, window=Window(0, row, self.grid.width, probability.shape[0]))

    def close(self) -> None:
        self._dst.close()


def _resample_back(path: Path, grid: Grid, writer: OutputWriter, progress: Progress,
                   block_rows: int = 512) -> None:
    """Resample work-grid probabilities onto the output grid, block of rows by block of rows."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    with rasterio.open(path) as src, WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width,
                                               height=grid.height, resampling=Resampling.bilinear,
                                               nodata=float("nan")) as vrt:
        for row in range(0, grid.height, block_rows):
            check_cancelled(progress)
            n = min(block_rows, grid.height - row)
            writer.write(row, vrt.read(1, window=Window(0, row, grid.width, n)).astype(np.float32))
            progress.report(0.9 + 0.05 * (row + n) / grid.height, "resampling to the input grid")
