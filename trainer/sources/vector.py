"""Labels from a local vector file (GeoJSON, GeoPackage, Shapefile, ...; any CRS) via pyogrio."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import BBox
from ..errors import LabelsError


@dataclass(frozen=True)
class VectorLabels:
    """Polygons of a labels file in lon/lat; ``skipped`` counts non-polygon or empty features."""

    polygons: list
    features: int
    skipped: int
    crs: str


def read_vector_polygons(path: str | Path, bbox: BBox | None = None, layer: str | int | None = None) -> VectorLabels:
    """Read polygons from ``path``, reproject them to EPSG:4326, keep those intersecting ``bbox``.

    Raises :class:`LabelsError` for a missing/unreadable file or one whose features are not
    polygons. A file with no features at all is returned empty (negatives-only datasets are valid).
    """
    import pyogrio
    import shapely
    from shapely.geometry import box

    path = Path(path).expanduser()
    if not path.exists():
        raise LabelsError(f"labels file {path} does not exist; give a GeoJSON/GeoPackage/Shapefile, "
                          "'overpass' for OpenStreetMap, or 'none' for negatives only")
    try:
        info = pyogrio.read_info(path, layer=layer)
        _, _, wkb, _ = pyogrio.raw.read(path, layer=layer, read_geometry=True, columns=[])
    except Exception as exc:  # pyogrio raises DataSourceError/DataLayerError and plain errors
        raise LabelsError(f"cannot read labels file {path}: {exc}") from None
    crs = info.get("crs") or "EPSG:4326"  # GeoJSON without a CRS member is lon/lat by definition
    geoms = [g for g in shapely.from_wkb([w for w in wkb if w is not None]) if g is not None and not g.is_empty]
    polygons = [g for g in geoms if g.geom_type in ("Polygon", "MultiPolygon")]
    if geoms and not polygons:
        kinds = sorted({g.geom_type for g in geoms})
        raise LabelsError(f"labels file {path} has {len(geoms)} features but no polygons ({', '.join(kinds)}); "
                          "labels must be footprint polygons")
    skipped = len(wkb) - len(polygons)
    polygons = to_lonlat(polygons, crs)
    polygons = [shapely.make_valid(p) if not p.is_valid else p for p in polygons]
    if bbox is not None:
        area = box(*bbox)
        polygons = [p for p in polygons if p.intersects(area)]
    return VectorLabels(polygons=polygons, features=len(wkb), skipped=skipped, crs=str(crs))


def to_lonlat(geoms: list, crs: str) -> list:
    """Reproject shapely geometries from ``crs`` to EPSG:4326 (x = lon, y = lat)."""
    return reproject(geoms, crs, "EPSG:4326")


def reproject(geoms: list, src: str, dst: str) -> list:
    import shapely
    from pyproj import CRS, Transformer

    if not geoms or CRS.from_user_input(src) == CRS.from_user_input(dst):
        return list(geoms)
    transformer = Transformer.from_crs(src, dst, always_xy=True)
    return [shapely.transform(g, lambda xy: _stack(transformer.transform(xy[:, 0], xy[:, 1]))) for g in geoms]


def _stack(xy: tuple) -> np.ndarray:
    return np.column_stack(xy)
