"""``camp fetch``: image chips and label masks for an extent, written as a training dataset.

Steps: list the tiles of the bbox at the zoom (refusing extents over ``max_tiles``), check the
sources are reachable (seconds, not minutes, when offline), load the labels (Overpass, a vector
file or none), then download/read tiles concurrently while the main thread rasterises each
chip's mask and writes both files atomically. The manifest (or the Esri metadata) is written
last, so a folder without one is an interrupted fetch that ``resume`` completes without
refetching the chips it already holds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import __version__, esri_tiles
from .chips import LabelIndex, project_labels, read_mask, write_chip, write_mask
from .config import BBox, FetchConfig, validate_bbox
from .errors import InputError, LabelsError, OutputExistsError, OverpassError, TileFetchError
from .fileio import staged_dir, write_json
from .progress import Progress, check_cancelled
from .sources import OFFLINE_EXAMPLE
from .tiling import (
    TILE_SIZE,
    WEB_MERCATOR,
    Tile,
    format_tile_url,
    ground_resolution,
    is_tile_template,
    tiles_for_bbox,
)

MANIFEST = "manifest.json"
LABELS_GEOJSON = "labels.geojson"
CLASS_NAME = "camp_structure"
# Share of the progress bar for the labels step; tiles take the rest.
LABELS_SHARE = 0.05
WRITERS = 2


@dataclass(frozen=True)
class FetchResult:
    out: Path
    chips: int
    labelled_chips: int
    missing_tiles: int
    failed_tiles: int
    label_polygons: int
    resolution_m: float
    seconds: float
    cached_tiles: int
    downloaded_tiles: int
    resumed_chips: int = 0
    problems: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        data["problems"] = list(self.problems)
        return data

    def summary(self) -> str:
        lines = [
            f"dataset: {self.out}",
            f"chips: {self.chips} ({self.labelled_chips} with labels), {self.label_polygons} label polygons, "
            f"{self.resolution_m:.3f} m/px",
            f"tiles: {self.downloaded_tiles} downloaded/read, {self.cached_tiles} from cache, "
            f"{self.resumed_chips} kept from an earlier run, {self.missing_tiles} missing, "
            f"{self.failed_tiles} failed ({self.seconds:.1f} s)",
        ]
        lines += [f"  {p}" for p in self.problems[:5]]
        return "\n".join(lines)


@dataclass
class _Tally:
    """Counts and per-chip records gathered while tiles arrive (main thread only)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    missing: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    cached: int = 0
    downloaded: int = 0
    resumed: int = 0


# ---------------------------------------------------------------------------- public API

def run_fetch(config: FetchConfig, progress: Progress) -> FetchResult:
    start = time.monotonic()
    bbox = bbox_lonlat(config.bbox, config.bbox_crs)
    tiles = tiles_for_bbox(bbox, config.zoom, config.max_tiles)
    out = Path(config.out)
    state = dataset_state(out)
    if state and not (config.overwrite or config.resume):
        raise OutputExistsError(
            f"{out} already holds a {state} dataset; pass --resume to complete it, --overwrite to replace it, "
            "or choose another --out")
    check_cancelled(progress)
    _check_imagery(config, tiles)
    progress.report(0.0, f"{len(tiles)} tiles at zoom {config.zoom}; loading labels")
    polygons = load_labels(config, bbox, progress)
    check_cancelled(progress)
    if config.overwrite and out.exists():
        with staged_dir(out) as stage:  # the old dataset stays until the new one is complete
            tally = _build(stage, tiles, polygons, config, progress, resume=False)
    else:
        created = not out.exists()
        try:
            tally = _build(out, tiles, polygons, config, progress, resume=config.resume)
        except Exception as exc:
            if created and not _is_cancel(exc):
                shutil.rmtree(out, ignore_errors=True)  # nothing useful was written: leave no trace
            raise
    progress.report(1.0, f"{len(tally.records)} chips written")
    return _result(out, tally, polygons, bbox, config, time.monotonic() - start)


def preflight(imagery: str, labels: str, overpass_url: str, timeout: float = 10.0, tile: Tile | None = None) -> None:
    """Fail within seconds when a source is unreachable or missing, with the offline form in the message.

    One GET of a tile (``tile``, default 0/0/0: any HTTP answer proves the server is up), one tiny
    Overpass query, or a check that the local files exist.
    """
    _check_tile_source(imagery, tile or Tile(0, 0, 0), timeout)
    if labels.lower() == "overpass":
        _check_overpass(overpass_url, timeout)
    elif labels.lower() != "none" and not Path(labels).expanduser().exists():
        raise LabelsError(f"labels file {labels} does not exist; give a GeoJSON/GeoPackage/Shapefile, "
                          "'overpass' or 'none'")


def bbox_lonlat(bbox: BBox, crs: str) -> BBox:
    """The bbox in lon/lat (EPSG:4326), reprojected from ``crs`` when needed."""
    if crs.upper() in ("EPSG:4326", "OGC:CRS84"):
        return bbox
    from pyproj.exceptions import CRSError
    from rasterio.errors import CRSError as RasterioCRSError
    from rasterio.warp import transform_bounds

    try:
        return validate_bbox(tuple(transform_bounds(crs, "EPSG:4326", *bbox)))  # type: ignore[arg-type]
    except (CRSError, RasterioCRSError) as exc:
        raise InputError(f"unknown bbox CRS {crs!r} ({exc}); use an EPSG code like EPSG:32636") from None


def dataset_state(out: Path) -> str | None:
    """'complete' (a manifest), 'partial' (chips but no manifest) or None (no dataset in ``out``)."""
    if (out / MANIFEST).is_file():
        return "complete"
    for sub in ("chips", "images"):
        folder = out / sub
        if folder.is_dir() and any(folder.glob("*.tif")):
            return "partial (interrupted, no manifest.json)"
    return None


def load_labels(config: FetchConfig, bbox: BBox, progress: Progress) -> list:
    """Label polygons in lon/lat for ``bbox`` from Overpass, a vector file, or none."""
    if config.labels.lower() == "none":
        return []
    if config.labels.lower() == "overpass":
        from .sources.overpass import fetch_osm_polygons

        polygons = fetch_osm_polygons(config.overpass_url, config.osm_filter, bbox, timeout=config.timeout,
                                      retries=config.retries)
        source = f"OpenStreetMap ({config.osm_filter})"
    else:
        from .sources.vector import read_vector_polygons

        labels = read_vector_polygons(config.labels, bbox)
        polygons = labels.polygons
        source = config.labels
        if labels.skipped:
            progress.log(f"labels: skipped {labels.skipped} features of {config.labels} without polygons")
    if not polygons:
        progress.log(f"warning: no label polygons from {source} in the extent; every chip is a negative")
    else:
        progress.log(f"labels: {len(polygons)} polygons from {source}")
    return polygons


# ---------------------------------------------------------------------------- sources

def _check_imagery(config: FetchConfig, tiles: list[Tile]) -> None:
    """Preflight the imagery with a tile that is not cached yet (a warm cache needs no server)."""
    if not is_tile_template(config.imagery) or config.imagery.lower().startswith("file://"):
        _check_tile_source(config.imagery, tiles[0], config.timeout)
        return
    from .sources.xyz import XyzSource

    source = XyzSource(config.imagery, cache_dir=config.cache_dir)
    uncached = next((t for t in tiles if not source.is_cached(t)), None)
    if uncached is not None:
        _check_tile_source(config.imagery, uncached, config.timeout)


def _check_tile_source(imagery: str, tile: Tile, timeout: float) -> None:
    from .sources.xyz import file_url_to_path, offline_hint, template_root

    if not is_tile_template(imagery):
        if imagery.lower().startswith(("http://", "https://")):
            raise InputError(f"imagery URL {imagery!r} has no {{z}}/{{x}}/{{y}} or {{q}} placeholders; "
                             "give an XYZ template like https://host/{z}/{x}/{y}.png or a local raster")
        path = _raster_path(imagery)
        if not path.exists():
            raise InputError(f"imagery {imagery!r} is neither an XYZ template nor an existing raster file; "
                             f"e.g. --imagery 'https://host/{{z}}/{{x}}/{{y}}.png' or --imagery ortho.tif")
        return
    if imagery.lower().startswith("file://"):
        folder = file_url_to_path(template_root(imagery))
        if not folder.is_dir():
            raise TileFetchError(f"tile folder {folder} does not exist (from --imagery {imagery!r}); "
                                 f"the form is {OFFLINE_EXAMPLE}")
        return
    import requests

    from .sources import new_session

    with new_session(1) as session:
        try:
            session.get(format_tile_url(imagery, tile), timeout=min(timeout, 10.0), stream=True).close()
        except requests.exceptions.RequestException:
            raise TileFetchError(offline_hint(imagery)) from None


def _check_overpass(url: str, timeout: float) -> None:
    import requests

    from .sources import new_session
    from .sources.overpass import offline_hint

    query = "[out:json][timeout:5];node(0,0,0.00001,0.00001);out ids;"
    with new_session(1) as session:
        try:
            session.post(url, data={"data": query}, timeout=min(timeout, 10.0)).close()
        except requests.exceptions.RequestException:
            raise OverpassError(offline_hint(url)) from None


def _raster_path(imagery: str) -> Path:
    from .sources.xyz import file_url_to_path

    return file_url_to_path(imagery) if imagery.lower().startswith("file://") else Path(imagery).expanduser()


@contextlib.contextmanager
def _outcomes(config: FetchConfig, tiles: list[Tile]) -> Iterator[Iterator[Any]]:
    """Tile outcomes from the configured imagery, as they arrive; closes the source afterwards."""
    from .sources.xyz import TileOutcome, XyzSource

    if is_tile_template(config.imagery):
        source = XyzSource(config.imagery, workers=config.workers, retries=config.retries,
                           timeout=config.timeout, cache_dir=config.cache_dir)
        stream = source.fetch(tiles)
        try:
            yield stream
        finally:
            stream.close()  # drops queued downloads on cancel/error
            source.close()
        return
    from .sources.raster import RasterSource

    with RasterSource(_raster_path(config.imagery)) as raster:
        yield (TileOutcome(t, "read", raster.read_tile(t, TILE_SIZE)) for t in tiles)


# ---------------------------------------------------------------------------- writing

def _paths(root: Path, config: FetchConfig, index: int, tile: Tile) -> tuple[Path, Path]:
    if config.output_format == "esri":
        return esri_tiles.image_path(root, index), esri_tiles.label_path(root, index)
    return root / "chips" / f"{tile.name}.tif", root / "labels" / f"{tile.name}.tif"


def _build(root: Path, tiles: list[Tile], polygons: list, config: FetchConfig, progress: Progress,
           resume: bool) -> _Tally:
    from shapely.geometry import mapping

    root.mkdir(parents=True, exist_ok=True)
    write_json(root / LABELS_GEOJSON, {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": mapping(p)} for p in polygons]})
    index = {tile: i + 1 for i, tile in enumerate(tiles)}  # stable Esri numbering across resumes
    labels = LabelIndex(project_labels(polygons))
    tally = _Tally()
    todo = []
    for tile in tiles:
        image, mask = _paths(root, config, index[tile], tile)
        if resume and image.is_file() and mask.is_file():
            tally.records.append(_record(root, tile, image, mask, read_mask(mask), "resume"))
            tally.resumed += 1
        else:
            todo.append(tile)
    if tally.resumed:
        progress.log(f"resume: kept {tally.resumed} chips, fetching {len(todo)}")
    # Chips are encoded and written by a small pool (GDAL compresses outside the GIL) while the
    # download pool keeps fetching; the queue of chips waiting to be written stays bounded.
    with _outcomes(config, todo) as outcomes, ThreadPoolExecutor(WRITERS, thread_name_prefix="camp-write") as pool:
        writing: deque[Future[dict[str, Any]]] = deque()
        for done, outcome in enumerate(outcomes, start=1):
            check_cancelled(progress)
            if _usable(outcome, tally):
                image_file, mask_file = _paths(root, config, index[outcome.tile], outcome.tile)
                writing.append(pool.submit(_write, root, outcome, labels, image_file, mask_file))
            while writing and (writing[0].done() or len(writing) > 4 * WRITERS):
                tally.records.append(writing.popleft().result())
            progress.report(LABELS_SHARE + (1 - LABELS_SHARE) * (tally.resumed + done) / len(tiles),
                            f"tile {tally.resumed + done}/{len(tiles)}")
        tally.records.extend(future.result() for future in writing)
    if not tally.records:
        raise TileFetchError(_nothing_fetched(config, tally, len(tiles)))
    for item in (tally.missing + tally.failed)[:5]:
        progress.log(f"tile {item['tile']}: {item['reason']}")
    _write_index(root, tiles, polygons, config, tally)
    return tally


def _usable(outcome: Any, tally: _Tally) -> bool:
    """Count the outcome; True when it has pixels to write."""
    if outcome.image is None or not outcome.image.has_data:
        target = tally.failed if outcome.status == "failed" else tally.missing
        target.append({"tile": outcome.tile.name, "reason": outcome.reason or "no data (fully transparent tile)"})
        return False
    tally.cached += outcome.status == "cached"
    tally.downloaded += outcome.status in ("downloaded", "read")
    return True


def _write(root: Path, outcome: Any, labels: LabelIndex, image_file: Path, mask_file: Path) -> dict[str, Any]:
    mask = labels.mask(outcome.tile)
    write_chip(image_file, outcome.image, outcome.tile)
    write_mask(mask_file, mask, outcome.tile)
    return _record(root, outcome.tile, image_file, mask_file, mask, outcome.status)


def _record(root: Path, tile: Tile, image: Path, mask_file: Path, mask: Any, source: str) -> dict[str, Any]:
    return {
        "name": tile.name, "tile": {"z": tile.z, "x": tile.x, "y": tile.y},
        "image": image.relative_to(root).as_posix(), "mask": mask_file.relative_to(root).as_posix(),
        "bounds_3857": list(tile.bounds_3857), "bounds_lonlat": list(tile.bounds_lonlat),
        "label_fraction": round(float((mask > 0).mean()), 6), "label_pixels": int((mask > 0).sum()),
        "source": source,
    }


def _nothing_fetched(config: FetchConfig, tally: _Tally, total: int) -> str:
    from .sources.xyz import offline_hint

    if tally.failed and all("cannot connect" in f["reason"] for f in tally.failed):
        return offline_hint(config.imagery)
    if tally.failed:
        return (f"all {total} tiles failed ({len(tally.failed)} unreadable or erroring, {len(tally.missing)} "
                f"missing); first: {tally.failed[0]['reason']}")
    return (f"none of the {total} tiles at zoom {config.zoom} exist in {config.imagery} (first: "
            f"{tally.missing[0]['reason']}); check the extent, the zoom and the template "
            "({-y} for TMS row order)")


def _write_index(root: Path, tiles: list[Tile], polygons: list, config: FetchConfig, tally: _Tally) -> None:
    """Esri metadata and the manifest, written last (the manifest marks the dataset complete)."""
    records = sorted(tally.records, key=lambda r: (r["tile"]["y"], r["tile"]["x"]))
    if config.output_format == "esri":
        counts = [esri_tiles.LabelCounts(int(Path(r["image"]).stem), {1: r["label_pixels"]} if r["label_pixels"] else {})
                  for r in records]
        esri_tiles.write_metadata(root, counts, {1: CLASS_NAME}, TILE_SIZE)
    bbox = bbox_lonlat(config.bbox, config.bbox_crs)
    manifest = {
        "product": "camp-mapper", "version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "layout": config.output_format, "crs": WEB_MERCATOR, "tile_size": TILE_SIZE, "zoom": config.zoom,
        "bbox_lonlat": list(bbox), "resolution_m": _resolution(bbox, config.zoom),
        "imagery": config.imagery, "labels": config.labels,
        "counts": {"tiles": len(tiles), "chips": len(records),
                   "labelled_chips": sum(1 for r in records if r["label_pixels"]),
                   "label_polygons": len(polygons), "missing": len(tally.missing), "failed": len(tally.failed),
                   "cached": tally.cached, "downloaded": tally.downloaded, "resumed": tally.resumed},
        "config": json.loads(json.dumps(config.to_dict(), default=str)),
        "chips": records, "missing": tally.missing, "failed": tally.failed,
    }
    write_json(root / MANIFEST, manifest)


def _resolution(bbox: BBox, zoom: int) -> float:
    return ground_resolution((bbox[1] + bbox[3]) / 2, zoom)


def _result(out: Path, tally: _Tally, polygons: list, bbox: BBox, config: FetchConfig, seconds: float) -> FetchResult:
    problems = tuple(f"tile {p['tile']}: {p['reason']}" for p in tally.missing + tally.failed)
    return FetchResult(
        out=out, chips=len(tally.records),
        labelled_chips=sum(1 for r in tally.records if r["label_pixels"]),
        missing_tiles=len(tally.missing), failed_tiles=len(tally.failed), label_polygons=len(polygons),
        resolution_m=_resolution(bbox, config.zoom), seconds=round(seconds, 3), cached_tiles=tally.cached,
        downloaded_tiles=tally.downloaded, resumed_chips=tally.resumed, problems=problems[:20])


def _is_cancel(exc: BaseException) -> bool:
    from .errors import Cancelled

    return isinstance(exc, (Cancelled, KeyboardInterrupt))
