"""Labels from OpenStreetMap through an Overpass API endpoint.

The query asks for ways and relations matching the tag filter inside the bbox with ``out geom``
(coordinates inline, no node lookups). Closed ways become polygons; multipolygon relations are
assembled from their outer and inner member ways (which may be split into several pieces) with
``linemerge`` + ``polygonize``, inners cut out as holes, and the result made valid. Overpass
reports many failures (timeouts, out of memory) as a ``remark`` in an HTTP 200 answer; those are
errors here too.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from ..config import BBox
from ..errors import OverpassError
from . import OFFLINE_EXAMPLE, new_session, retry_delay

if TYPE_CHECKING:
    import requests
    from shapely.geometry.base import BaseGeometry

RETRY_STATUS = frozenset({429, 502, 503, 504})
_SIMPLE_FILTER = re.compile(r"^\s*([\w:.-]+)\s*(?:(!?=|~)\s*(.+?))?\s*$")


def filter_clauses(osm_filter: str) -> list[str]:
    """``building;amenity=refugee_site`` -> ``['["building"]', '["amenity"="refugee_site"]']``.

    Raw Overpass filters (starting with ``[``) pass through unchanged.
    """
    clauses = []
    for part in (p.strip() for p in osm_filter.split(";")):
        if not part:
            continue
        if part.startswith("["):
            clauses.append(part)
            continue
        match = _SIMPLE_FILTER.match(part)
        if not match:
            raise OverpassError(f"cannot read the OSM filter {part!r}; use key, key=value, key!=value, "
                                'key~regex, or a raw Overpass filter like ["building"]')
        key, op, value = match.groups()
        clauses.append(f'["{key}"]' if op is None else f'["{key}"{op}"{value.strip(chr(34))}"]')
    if not clauses:
        raise OverpassError(f"the OSM filter {osm_filter!r} is empty; e.g. --osm-filter building")
    return clauses


def build_query(osm_filter: str, bbox: BBox, timeout: int = 60) -> str:
    """Overpass QL for ways and relations matching ``osm_filter`` in a lon/lat ``bbox``."""
    west, south, east, north = bbox
    area = f"({south:.7f},{west:.7f},{north:.7f},{east:.7f})"
    parts = "".join(f"way{c}{area};relation{c}{area};" for c in filter_clauses(osm_filter))
    return f"[out:json][timeout:{int(timeout)}];({parts});out geom;"


def offline_hint(url: str) -> str:
    return (f"cannot reach the Overpass API at {url}. Check the network, try another endpoint "
            f"(--overpass-url), or use a local labels file: {OFFLINE_EXAMPLE}")


def query_overpass(url: str, query: str, *, timeout: float = 60.0, retries: int = 4, backoff: float = 1.0,
                   session: requests.Session | None = None) -> dict[str, Any]:
    """POST ``query``; retry 429/5xx with backoff; raise :class:`OverpassError` on any failure."""
    import requests

    own = session is None
    session = session or new_session(1)
    try:
        for attempt in range(retries + 1):
            try:
                response = session.post(url, data={"data": query}, timeout=timeout)
            except requests.exceptions.ConnectionError as exc:
                raise OverpassError(offline_hint(url)) from exc
            except requests.exceptions.Timeout:
                problem, retry_after = f"no answer within {timeout:g} s", None
            else:
                if response.status_code == 200:
                    return _parse(response, url)
                problem = f"HTTP {response.status_code}: {response.text[:200].strip()}"
                if response.status_code not in RETRY_STATUS:
                    raise OverpassError(f"the Overpass API at {url} refused the query ({problem}); "
                                        "check --osm-filter")
                retry_after = response.headers.get("Retry-After")
            if attempt < retries:
                time.sleep(retry_delay(attempt, retry_after, backoff, cap=60.0))
        raise OverpassError(f"the Overpass API at {url} failed {retries + 1} times ({problem}); "
                            "try again later or use another endpoint (--overpass-url)")
    finally:
        if own:
            session.close()


def _parse(response: Any, url: str) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        raise OverpassError(f"the Overpass API at {url} did not answer JSON (starts {response.text[:80]!r}); "
                            "is --overpass-url an Overpass interpreter endpoint?") from None
    remark = str(payload.get("remark") or "")
    if "error" in remark.lower():
        raise OverpassError(f"the Overpass API reported: {remark.strip()}; use a smaller extent or try later")
    return payload


def fetch_osm_polygons(url: str, osm_filter: str, bbox: BBox, *, timeout: float = 60.0, retries: int = 4,
                       backoff: float = 1.0) -> list:
    """Polygons (lon/lat shapely geometries) of OSM features matching ``osm_filter`` in ``bbox``."""
    server_timeout = max(25, int(timeout))
    query = build_query(osm_filter, bbox, timeout=server_timeout)
    # Give the server its whole [timeout:N] budget plus transfer time before giving up on it.
    payload = query_overpass(url, query, timeout=server_timeout + 15, retries=retries, backoff=backoff)
    return elements_to_polygons(payload.get("elements", []))


def elements_to_polygons(elements: list[dict[str, Any]]) -> list:
    """Valid (Multi)Polygons from ``out geom`` ways and multipolygon relations; other elements are skipped."""
    polygons = []
    for element in elements:
        if element.get("type") == "way":
            geom = _way_polygon(element.get("geometry") or [])
        elif element.get("type") == "relation":
            geom = _relation_polygon(element.get("members") or [])
        else:
            continue
        if geom is not None:
            polygons.extend(_polygonal_parts(geom))
    return polygons


def _coords(points: list[dict[str, float] | None]) -> list[tuple[float, float]]:
    return [(p["lon"], p["lat"]) for p in points if p]


def _way_polygon(points: list[dict[str, float]]) -> BaseGeometry | None:
    from shapely.geometry import Polygon

    coords = _coords(points)
    if len(coords) >= 2 and coords[0] != coords[-1]:
        coords.append(coords[0])  # an area way whose ring was not closed in the data
    if len(set(coords)) < 3:
        return None
    return Polygon(coords)


def _relation_polygon(members: list[dict[str, Any]]) -> BaseGeometry | None:
    outer = _rings([m for m in members if m.get("type") == "way" and m.get("role", "outer") in ("outer", "")])
    inner = _rings([m for m in members if m.get("type") == "way" and m.get("role") == "inner"])
    if outer is None:
        return None
    return outer.difference(inner) if inner is not None else outer


def _rings(ways: list[dict[str, Any]]) -> BaseGeometry | None:
    """Union of the polygons formed by joining the member ways end to end."""
    from shapely import make_valid, unary_union
    from shapely.geometry import LineString
    from shapely.ops import linemerge, polygonize

    lines = [LineString(c) for c in (_coords(w.get("geometry") or []) for w in ways) if len(c) >= 2]
    if not lines:
        return None
    merged = linemerge(lines)
    pieces = [make_valid(p) for p in polygonize(merged)]
    if not pieces:
        return None
    return unary_union(pieces)


def _polygonal_parts(geom: BaseGeometry) -> list:
    """Polygon parts of a geometry after make_valid (which may return a GeometryCollection)."""
    from shapely import make_valid

    geom = make_valid(geom)
    if geom.geom_type == "Polygon":
        return [geom] if not geom.is_empty else []
    if geom.geom_type == "MultiPolygon":
        return [geom]
    return [g for part in getattr(geom, "geoms", []) for g in _polygonal_parts(part)]
