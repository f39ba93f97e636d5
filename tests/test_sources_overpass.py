"""Overpass labels: query building, way/relation assembly, remarks and retries on a real server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from servers import OverpassServer
from shapely.geometry import Polygon, box, shape

from trainer.errors import OverpassError
from trainer.sources.overpass import build_query, elements_to_polygons, fetch_osm_polygons, filter_clauses


def _ring(coords):
    return [{"lon": x, "lat": y} for x, y in coords]


def test_filter_clauses():
    assert filter_clauses("building") == ['["building"]']
    assert filter_clauses("amenity=refugee_site; building") == ['["amenity"="refugee_site"]', '["building"]']
    assert filter_clauses('["building"]["building"!="no"]') == ['["building"]["building"!="no"]']
    assert filter_clauses("building!=no") == ['["building"!="no"]']
    with pytest.raises(OverpassError, match="empty"):
        filter_clauses(" ; ")


def test_query_shape():
    query = build_query("building;amenity=refugee_site", (32.59, 0.35, 32.60, 0.36), timeout=30)
    assert query == (
        '[out:json][timeout:30];(way["building"](0.3500000,32.5900000,0.3600000,32.6000000);'
        'relation["building"](0.3500000,32.5900000,0.3600000,32.6000000);'
        'way["amenity"="refugee_site"](0.3500000,32.5900000,0.3600000,32.6000000);'
        'relation["amenity"="refugee_site"](0.3500000,32.5900000,0.3600000,32.6000000););out geom;')


def test_hand_built_relation_with_split_outer_and_hole():
    # Outer ring split into two ways (as in real OSM data), one inner ring, and an unclosed way.
    outer_a = [(0, 0), (4, 0), (4, 4)]
    outer_b = [(4, 4), (0, 4), (0, 0)]
    inner = [(1, 1), (2, 1), (2, 2), (1, 2), (1, 1)]
    elements = [
        {"type": "relation", "id": 1, "tags": {"type": "multipolygon", "building": "yes"}, "members": [
            {"type": "way", "ref": 10, "role": "outer", "geometry": _ring(outer_a)},
            {"type": "way", "ref": 11, "role": "outer", "geometry": _ring(outer_b)},
            {"type": "way", "ref": 12, "role": "inner", "geometry": _ring(inner)},
            {"type": "node", "ref": 13, "role": "label"},
        ]},
        {"type": "way", "id": 2, "tags": {"building": "yes"}, "geometry": _ring([(10, 10), (11, 10), (11, 11)])},
        {"type": "way", "id": 3, "tags": {"building": "yes"}, "geometry": _ring([(20, 20), (21, 20)])},
    ]
    polygons = elements_to_polygons(elements)
    assert len(polygons) == 2
    with_hole = polygons[0]
    assert with_hole.geom_type == "Polygon" and len(with_hole.interiors) == 1
    assert with_hole.area == pytest.approx(16 - 1)
    assert polygons[1].equals(Polygon([(10, 10), (11, 10), (11, 11)]))


def test_self_intersecting_way_is_made_valid():
    bowtie = _ring([(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)])
    polygons = elements_to_polygons([{"type": "way", "id": 1, "geometry": bowtie}])
    assert polygons and all(p.is_valid for p in polygons)
    assert sum(p.area for p in polygons) == pytest.approx(2.0)


@pytest.mark.sample_data
def test_server_relations_with_holes_become_polygons_with_holes(kampala, tmp_path: Path):
    features = json.loads(kampala.labels.read_text())["features"]
    first = shape(features[0]["geometry"])
    # A courtyard building: the footprint of the first building with a hole in its middle.
    hole = first.centroid.buffer(first.length / 40)
    courtyard = first.difference(hole)
    assert len(courtyard.interiors) == 1
    features[0]["geometry"] = courtyard.__geo_interface__
    path = tmp_path / "labels.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    west, south, east, north = kampala.bbox
    with OverpassServer(path) as server:
        polygons = fetch_osm_polygons(server.interpreter_url, "building", kampala.bbox)
        assert '(way["building"]' in server.queries[0] and "out geom;" in server.queries[0]
    expected = [shape(f["geometry"]) for f in features if shape(f["geometry"]).intersects(box(west, south, east, north))]
    assert len(polygons) == len(expected)
    # Every footprint comes back as the same shape, holes included (ours and any in the real data).
    for want in expected:
        got = [p for p in polygons if p.representative_point().within(want)]
        assert len(got) == 1 and got[0].symmetric_difference(want).area < 1e-14
    assert any(list(p.interiors) == list(courtyard.interiors) or p.equals(courtyard) for p in polygons)


@pytest.mark.sample_data
def test_remark_on_http_200_is_an_error(overpass_server, kampala):
    overpass_server.faults.remark = 'runtime error: Query timed out in "query" at line 1 after 25 seconds.'
    with pytest.raises(OverpassError, match="Query timed out"):
        fetch_osm_polygons(overpass_server.interpreter_url, "building", kampala.bbox)


@pytest.mark.sample_data
@pytest.mark.parametrize("status", [429, 503, 504])
def test_overloaded_server_is_retried(overpass_server, kampala, status):
    overpass_server.faults.fail_first["*"] = 2
    overpass_server.faults.fail_status = status
    start = time.monotonic()
    polygons = fetch_osm_polygons(overpass_server.interpreter_url, "building", kampala.bbox)
    assert len(polygons) > 100 and len(overpass_server.queries) == 1
    assert sum(overpass_server.requests.values()) == 3
    assert time.monotonic() - start < 1.0  # Retry-After: 0 was honoured over the 1 s, 2 s backoff


@pytest.mark.sample_data
def test_bad_request_and_exhausted_retries(overpass_server, kampala):
    overpass_server.faults.status["*"] = 400
    with pytest.raises(OverpassError, match="refused the query .*HTTP 400"):
        fetch_osm_polygons(overpass_server.interpreter_url, "building", kampala.bbox)
    overpass_server.faults.status["*"] = 504
    with pytest.raises(OverpassError, match="failed 3 times .*HTTP 504"):
        fetch_osm_polygons(overpass_server.interpreter_url, "building", kampala.bbox, retries=2, backoff=0.01)


def test_unreachable_overpass_shows_offline_form(kampala):
    with OverpassServer(kampala.labels) as server:
        url = server.interpreter_url
    with pytest.raises(OverpassError, match=r"--labels labels.geojson"):
        fetch_osm_polygons(url, "building", (32.59, 0.35, 32.60, 0.36))
