"""Labels from vector files in any CRS and format, read with pyogrio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import shapely
from shapely.geometry import box, shape

from trainer.errors import LabelsError
from trainer.sources.vector import read_vector_polygons, reproject

pytestmark = pytest.mark.sample_data


def _reference(kampala) -> list:
    return [shape(f["geometry"]) for f in json.loads(kampala.labels.read_text())["features"]]


def _write(path: Path, polygons: list, crs: str, driver: str) -> None:
    pyogrio.raw.write(path, np.array(shapely.to_wkb(polygons), dtype=object), field_data=[], fields=[],
                      geometry_type="Polygon", crs=crs, driver=driver)


@pytest.mark.parametrize(("name", "driver"), [("l.gpkg", "GPKG"), ("l.shp", "ESRI Shapefile"),
                                              ("l.geojson", "GeoJSON")])
def test_utm_files_come_back_in_lonlat(kampala, tmp_path, name, driver):
    reference = _reference(kampala)
    utm = reproject(reference, "EPSG:4326", "EPSG:32636")
    assert utm[0].bounds[0] > 100000  # really metres
    path = tmp_path / name
    _write(path, utm, "EPSG:32636", driver)
    labels = read_vector_polygons(path)
    assert labels.features == len(reference) and labels.skipped == 0
    for got, want in zip(labels.polygons, reference, strict=True):
        assert got.symmetric_difference(want).area < 1e-6 * want.area


def test_bbox_filter(kampala):
    reference = _reference(kampala)
    area = box(*kampala.bbox)
    labels = read_vector_polygons(kampala.labels, kampala.bbox)
    assert len(labels.polygons) == sum(p.intersects(area) for p in reference)


def test_missing_file(tmp_path):
    with pytest.raises(LabelsError, match=r"nope.geojson does not exist.*'none'"):
        read_vector_polygons(tmp_path / "nope.geojson")


def test_empty_file_is_allowed(tmp_path):
    path = tmp_path / "empty.geojson"
    path.write_text('{"type": "FeatureCollection", "features": []}')
    assert read_vector_polygons(path).polygons == []


def test_points_only_is_an_error(tmp_path):
    path = tmp_path / "points.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [32.59, 0.35]}}]}))
    with pytest.raises(LabelsError, match="no polygons \\(Point\\)"):
        read_vector_polygons(path)


def test_not_a_vector_file(tmp_path):
    path = tmp_path / "labels.geojson"
    path.write_text("this is not json")
    with pytest.raises(LabelsError, match="cannot read labels file"):
        read_vector_polygons(path)
