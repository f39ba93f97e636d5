"""Compare a detection with reference polygons (``camp evaluate``).

Pixel metrics: the reference polygons (a vector file or OpenStreetMap via Overpass) are projected
to the mask's CRS and rasterised on its grid (pixel centres inside a polygon count); nodata pixels
of the mask are left out. IoU, precision, recall and F1 are for the "camp structure" class; mean
IoU averages it with the background IoU, because building IoU alone flatters a model that marks
everything (GUIDE.md 5b) -- the report also gives the IoU an all-positive mask would score.

Object metrics: each predicted footprint is matched one-to-one to the reference object it
overlaps most (greedy by IoU), and a pair counts when its polygon IoU >= ``match_iou``.

The mask is read whole (or the --bbox window of it): evaluation extents are small next to the
detection extents that detect streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import EvaluateConfig
from .errors import InputError, LabelsError
from .fileio import write_json
from .progress import Progress, check_cancelled
from .vectorize import MASK_NODATA


@dataclass(frozen=True)
class EvaluateResult:
    prediction: Path
    labels: str
    report: Path
    pixel: dict[str, float]  # iou, precision, recall, f1, background_iou, mean_iou, counts
    objects: dict[str, float]  # reference, predicted, matched, precision, recall, f1
    extent: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"prediction": str(self.prediction), "labels": self.labels, "report": str(self.report),
                "pixel": self.pixel, "objects": self.objects, "extent": self.extent}

    def summary(self) -> str:
        p, o = self.pixel, self.objects
        rows = [
            f"{'metric':<22}{'pixels':>10}{'objects':>10}",
            f"{'IoU (camp structure)':<22}{p['iou']:>10.3f}{'':>10}",
            f"{'IoU (background)':<22}{p['background_iou']:>10.3f}{'':>10}",
            f"{'mean IoU':<22}{p['mean_iou']:>10.3f}{'':>10}",
            f"{'precision':<22}{p['precision']:>10.3f}{o['precision']:>10.3f}",
            f"{'recall':<22}{p['recall']:>10.3f}{o['recall']:>10.3f}",
            f"{'F1':<22}{p['f1']:>10.3f}{o['f1']:>10.3f}",
            f"objects: {o['reference']} reference, {o['predicted']} predicted, {o['matched']} matched at "
            f"IoU >= {o['match_iou']:.2f}; an all-positive mask would score IoU {p['all_positive_iou']:.3f}",
            f"report: {self.report}",
        ]
        return "\n".join(rows)


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def pixel_metrics(predicted: np.ndarray, reference: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """Binary segmentation metrics over ``valid`` pixels (all arrays the same shape, bool)."""
    p, r = predicted[valid], reference[valid]
    tp = int(np.count_nonzero(p & r))
    fp = int(np.count_nonzero(p & ~r))
    fn = int(np.count_nonzero(~p & r))
    tn = int(p.size - tp - fp - fn)
    iou = _ratio(tp, tp + fp + fn)
    background_iou = _ratio(tn, tn + fp + fn)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"iou": iou, "background_iou": background_iou, "mean_iou": (iou + background_iou) / 2,
            "precision": precision, "recall": recall, "f1": _ratio(2 * precision * recall, precision + recall),
            "all_positive_iou": _ratio(tp + fn, p.size), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "pixels": int(p.size)}


def match_objects(predicted: list[Any], reference: list[Any], match_iou: float) -> dict[str, float]:
    """One-to-one greedy matching by polygon IoU; counts and object precision/recall/F1."""
    from shapely import STRtree

    pairs: list[tuple[float, int, int]] = []
    if predicted and reference:
        tree = STRtree(reference)
        for i, geom in enumerate(predicted):
            for j in tree.query(geom, predicate="intersects"):
                inter = geom.intersection(reference[j]).area
                union = geom.area + reference[j].area - inter
                if union > 0 and inter / union >= match_iou:
                    pairs.append((inter / union, i, int(j)))
    used_p: set[int] = set()
    used_r: set[int] = set()
    for _, i, j in sorted(pairs, reverse=True):
        if i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
    matched = len(used_p)
    precision, recall = _ratio(matched, len(predicted)), _ratio(matched, len(reference))
    return {"reference": len(reference), "predicted": len(predicted), "matched": matched, "match_iou": match_iou,
            "precision": precision, "recall": recall, "f1": _ratio(2 * precision * recall, precision + recall)}


def _window(src: Any, config: EvaluateConfig) -> Any:
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    full = Window(0, 0, src.width, src.height)
    if config.bbox is None:
        return full
    bounds = transform_bounds(config.bbox_crs, src.crs, *config.bbox, densify_pts=21)
    window = from_bounds(*bounds, transform=src.transform).round_offsets(op="floor").round_lengths(op="ceil")
    try:
        return window.intersection(full)
    except Exception:  # noqa: BLE001 - rasterio raises WindowError for disjoint windows
        raise InputError(f"bbox {','.join(map(str, config.bbox))} does not overlap the prediction "
                         f"{config.prediction}; give a bbox inside it or leave it out") from None


def _reference_polygons(config: EvaluateConfig, bbox_lonlat: tuple[float, ...]) -> list[Any]:
    if config.labels.lower() == "overpass":
        from .sources.overpass import fetch_osm_polygons

        return fetch_osm_polygons(config.overpass_url, config.osm_filter, bbox_lonlat)
    from .sources.vector import read_vector_polygons

    return read_vector_polygons(config.labels, bbox=bbox_lonlat).polygons


def _read_footprints(path: Path, crs: Any) -> list[Any]:
    import pyogrio
    import shapely

    from .sources.vector import reproject

    if not path.is_file():
        return []
    meta, _, wkb, _ = pyogrio.raw.read(path, read_geometry=True, columns=[])
    geoms = [g for g in shapely.from_wkb([w for w in wkb if w is not None]) if g is not None and not g.is_empty]
    return reproject(geoms, meta.get("crs") or crs.to_string(), crs.to_string())


def run_evaluate(config: EvaluateConfig, progress: Progress) -> EvaluateResult:
    """Pixel and object metrics of ``config.prediction`` (a detect folder) against reference polygons."""
    import rasterio
    import shapely
    from rasterio.features import rasterize
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, bounds
    from shapely.geometry import box

    from .sources.vector import reproject

    folder = config.prediction
    mask_path = folder / "mask.tif" if folder.is_dir() else folder
    if not mask_path.is_file():
        raise InputError(f"no mask.tif in {folder}; give the output folder of camp detect (--prediction)")
    progress.report(0.05, "reading the mask")
    with rasterio.open(mask_path) as src:
        window = _window(src, config)
        mask = src.read(1, window=window)
        transform, crs = src.window_transform(window), src.crs
    extent = bounds(Window(0, 0, mask.shape[1], mask.shape[0]), transform)
    bbox_lonlat = transform_bounds(crs, "EPSG:4326", *extent, densify_pts=21)
    check_cancelled(progress)
    progress.report(0.2, "reading reference polygons")
    reference = reproject(_reference_polygons(config, bbox_lonlat), "EPSG:4326", crs.to_string())
    area = box(*extent)
    reference = [g for g in reference if g.intersects(area)]
    if not reference:
        raise LabelsError(f"no reference polygons from {config.labels} inside the prediction's extent "
                          f"{','.join(f'{v:.6f}' for v in bbox_lonlat)} (lon/lat); check the labels and --bbox")
    check_cancelled(progress)
    progress.report(0.5, "rasterising the reference")
    truth = rasterize(reference, out_shape=mask.shape, transform=transform, dtype="uint8").astype(bool)
    valid = mask != MASK_NODATA
    pixel = pixel_metrics(mask == 1, truth, valid)
    progress.report(0.7, "matching footprints")
    predicted = [g for g in _read_footprints(folder / "footprints.gpkg", crs) if g.intersects(area)]
    # Objects cut by the evaluation extent are compared on their parts inside it.
    clipped_ref = [g for g in (shapely.intersection(r, area) for r in reference) if not g.is_empty]
    clipped_pred = [g for g in (shapely.intersection(p, area) for p in predicted) if not g.is_empty]
    objects = match_objects(clipped_pred, clipped_ref, config.match_iou)
    report = config.out or (folder if folder.is_dir() else folder.parent) / "evaluation.json"
    extent_info = {"crs": crs.to_string(), "bounds": list(extent), "bbox_lonlat": list(bbox_lonlat),
                   "width": int(mask.shape[1]), "height": int(mask.shape[0])}
    result = EvaluateResult(folder, config.labels, Path(report), pixel, objects, extent_info)
    write_json(report, {**result.to_dict(), "config": config.to_dict()})
    progress.report(1.0, f"IoU {pixel['iou']:.3f}, mean IoU {pixel['mean_iou']:.3f}")
    return result
