"""camp evaluate: metrics on known arrays and polygons, and on detect folders over the real
Kampala grid and labels (a perfect, a shifted and an empty prediction; file vs Overpass labels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from shapely.geometry import box

from trainer.config import EvaluateConfig
from trainer.errors import InputError, LabelsError
from trainer.evaluate import match_objects, pixel_metrics, run_evaluate
from trainer.progress import NullProgress


def test_pixel_metrics_on_known_counts() -> None:
    predicted = np.zeros((10, 10), bool)
    reference = np.zeros((10, 10), bool)
    predicted[0:4, 0:5] = True  # 20 px
    reference[2:6, 0:5] = True  # 20 px, 10 shared
    valid = np.ones((10, 10), bool)
    m = pixel_metrics(predicted, reference, valid)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (10, 10, 10, 70)
    assert m["iou"] == pytest.approx(10 / 30) and m["background_iou"] == pytest.approx(70 / 90)
    assert m["precision"] == m["recall"] == m["f1"] == pytest.approx(0.5)
    assert m["mean_iou"] == pytest.approx((10 / 30 + 70 / 90) / 2)
    assert m["all_positive_iou"] == pytest.approx(0.2)
    valid[0:2] = False  # nodata rows drop out of every count
    assert pixel_metrics(predicted, reference, valid)["fp"] == 0


def test_object_matching_is_one_to_one_at_the_iou() -> None:
    reference = [box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 42, 2)]
    predicted = [box(1, 0, 11, 10), box(0, 0, 10, 9), box(20, 0, 24, 10), box(100, 100, 101, 101)]
    m = match_objects(predicted, reference, 0.5)
    # Two predictions overlap the first reference: only one may match it.
    assert (m["reference"], m["predicted"], m["matched"]) == (3, 4, 1)
    assert m["precision"] == pytest.approx(0.25) and m["recall"] == pytest.approx(1 / 3)
    assert match_objects(predicted, reference, 0.3)["matched"] == 2
    assert match_objects([], reference, 0.5)["f1"] == 0.0


def _detect_folder(folder: Path, mask: np.ndarray, transform, crs: str) -> Path:  # noqa: ANN001
    """A detect-style folder (mask.tif + footprints.gpkg) written with the product's writers."""
    from trainer.vectorize import FootprintCollector, write_footprints

    folder.mkdir(parents=True)
    with rasterio.open(folder / "mask.tif", "w", driver="GTiff", width=mask.shape[1], height=mask.shape[0],
                       count=1, dtype="uint8", nodata=255, crs=crs, transform=transform) as dst:
        dst.write(mask, 1)
    collector = FootprintCollector(transform, rasterio.crs.CRS.from_string(crs), mask.shape[0])
    collector.add(0, mask, mask.astype(np.float32))
    write_footprints(folder / "footprints.gpkg", collector.finish(), rasterio.crs.CRS.from_string(crs))
    return folder


@pytest.fixture(scope="module")
def kampala_grid(kampala):  # noqa: ANN001, ANN201
    """The mosaic grid of the Kampala tiles and its reference mask from labels.geojson."""
    from rasterio.features import rasterize

    from trainer.sources.vector import read_vector_polygons, reproject
    from trainer.tiling import Tile

    xs = [t.x for t in kampala.tiles]
    ys = [t.y for t in kampala.tiles]
    transform = Tile(min(xs), min(ys), kampala.zoom).transform()
    shape = ((max(ys) - min(ys) + 1) * 256, (max(xs) - min(xs) + 1) * 256)
    polygons = reproject(read_vector_polygons(kampala.labels).polygons, "EPSG:4326", "EPSG:3857")
    truth = rasterize(polygons, out_shape=shape, transform=transform, dtype="uint8")
    return transform, truth


@pytest.mark.sample_data
def test_perfect_shifted_and_empty_predictions(kampala, kampala_grid, tmp_path: Path) -> None:
    transform, truth = kampala_grid
    perfect = _detect_folder(tmp_path / "perfect", truth, transform, "EPSG:3857")
    r = run_evaluate(EvaluateConfig(prediction=perfect, labels=str(kampala.labels)), NullProgress())
    assert r.pixel["iou"] == pytest.approx(1.0) and r.pixel["mean_iou"] == pytest.approx(1.0)
    assert r.objects["reference"] >= 100 and r.objects["matched"] >= 0.9 * r.objects["reference"]
    assert json.loads((perfect / "evaluation.json").read_text())["pixel"]["iou"] == pytest.approx(1.0)
    assert "mean IoU" in r.summary() and "matched" in r.summary()

    shifted = _detect_folder(tmp_path / "shifted", np.roll(truth, 12, axis=1), transform, "EPSG:3857")
    s = run_evaluate(EvaluateConfig(prediction=shifted, labels=str(kampala.labels)), NullProgress())
    assert 0.05 < s.pixel["iou"] < 0.95 and s.objects["matched"] < r.objects["matched"]

    empty = _detect_folder(tmp_path / "empty", np.zeros_like(truth), transform, "EPSG:3857")
    e = run_evaluate(EvaluateConfig(prediction=empty, labels=str(kampala.labels),
                                    out=tmp_path / "reports" / "empty.json"), NullProgress())
    assert e.pixel["iou"] == 0.0 and e.objects["predicted"] == 0 and e.objects["recall"] == 0.0
    assert (tmp_path / "reports" / "empty.json").is_file()
    assert e.pixel["all_positive_iou"] == pytest.approx(truth.mean(), rel=1e-6)


@pytest.mark.sample_data
def test_overpass_labels_and_bbox(kampala, kampala_grid, overpass_server, tmp_path: Path) -> None:
    transform, truth = kampala_grid
    folder = _detect_folder(tmp_path / "det", np.roll(truth, 5, axis=0), transform, "EPSG:3857")
    from_file = run_evaluate(EvaluateConfig(prediction=folder, labels=str(kampala.labels)), NullProgress())
    from_osm = run_evaluate(EvaluateConfig(prediction=folder, labels="overpass",
                                           overpass_url=overpass_server.interpreter_url), NullProgress())
    assert from_osm.pixel["iou"] == pytest.approx(from_file.pixel["iou"], abs=1e-3)
    assert from_osm.objects["reference"] == from_file.objects["reference"]
    west, south, east, north = kampala.bbox
    half = (west, south, (west + east) / 2, north)
    part = run_evaluate(EvaluateConfig(prediction=folder, labels=str(kampala.labels), bbox=half), NullProgress())
    assert part.extent["width"] == pytest.approx(truth.shape[1] / 2, abs=2)
    assert part.pixel["pixels"] < from_file.pixel["pixels"] * 0.55
    assert part.objects["reference"] < from_file.objects["reference"]


@pytest.mark.sample_data
def test_bad_evaluation_input(kampala, kampala_grid, tmp_path: Path) -> None:
    transform, truth = kampala_grid
    with pytest.raises(InputError, match="no mask.tif"):
        run_evaluate(EvaluateConfig(prediction=tmp_path, labels=str(kampala.labels)), NullProgress())
    folder = _detect_folder(tmp_path / "det", truth, transform, "EPSG:3857")
    with pytest.raises(InputError, match="does not overlap"):
        run_evaluate(EvaluateConfig(prediction=folder, labels=str(kampala.labels), bbox=(10, 10, 10.1, 10.1)),
                     NullProgress())
    empty = tmp_path / "none.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(LabelsError, match="no reference polygons"):
        run_evaluate(EvaluateConfig(prediction=folder, labels=str(empty)), NullProgress())
