"""Footprint polygons from a mask that arrives in row blocks, with true ground areas.

Detect hands over finished rows block by block (it never holds the whole mask), so polygons are
traced per block with ``rasterio.features.shapes``; pieces that touch a block's top or bottom
edge may continue in the neighbouring block and are merged at the end (4-connected, as shapes
traces them). Areas are measured on the WGS84 ellipsoid, so they are true square metres in any
CRS, including Web Mercator, whose nominal square metres are about 1/cos^2(lat) too large.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MASK_NODATA = 255


@dataclass
class _Piece:
    geometry: Any  # shapely Polygon in whole-grid pixel coordinates (exact integers: unions are exact)
    prob_sum: float
    pixels: int


@dataclass(frozen=True)
class Footprints:
    """Final polygons (map CRS) with their attributes, in the order they are written."""

    geometries: list[Any]
    area_m2: np.ndarray
    mean_probability: np.ndarray

    @property
    def count(self) -> int:
        return len(self.geometries)

    @property
    def total_area_m2(self) -> float:
        return float(self.area_m2.sum()) if self.count else 0.0


@dataclass
class FootprintCollector:
    """Collects polygons of ``mask == 1`` block by block; call :meth:`finish` once at the end.

    ``metres_per_unit`` converts ``simplify_m`` to CRS units (ground metres per CRS unit at the
    grid's centre).
    """

    transform: Any  # affine.Affine of the whole grid
    crs: Any  # rasterio CRS
    height: int
    min_area_m2: float = 0.0
    simplify_m: float = 0.0
    metres_per_unit: float = 1.0
    _closed: list[_Piece] = field(default_factory=list)
    _open: list[_Piece] = field(default_factory=list)

    def add(self, row: int, mask: np.ndarray, probability: np.ndarray) -> None:
        """Trace rows ``row .. row+len(mask)`` (mask uint8 0/1/255, probability float32)."""
        from affine import Affine
        from rasterio.features import rasterize, shapes
        from shapely import affinity
        from shapely.geometry import shape

        positive = mask == 1
        if not positive.any():
            return
        n = mask.shape[0]
        polygons = [shape(g) for g, _ in shapes(positive.astype(np.uint8), mask=positive, connectivity=4)]
        # Pixel -> label image, so each piece gets its probability sum in one bincount.
        labels = rasterize(((p, i + 1) for i, p in enumerate(polygons)), out_shape=mask.shape,
                           transform=Affine.identity(), dtype="int32")
        prob = np.nan_to_num(probability, nan=0.0).ravel()
        sums = np.bincount(labels.ravel(), weights=prob, minlength=len(polygons) + 1)
        counts = np.bincount(labels.ravel(), minlength=len(polygons) + 1)
        for i, poly in enumerate(polygons):
            _, top, _, bottom = poly.bounds
            piece = _Piece(affinity.translate(poly, 0, row), float(sums[i + 1]), int(counts[i + 1]))
            touches_edge = (top <= 0 and row > 0) or (bottom >= n and row + n < self.height)
            (self._open if touches_edge else self._closed).append(piece)

    def finish(self) -> Footprints:
        """Merge pieces across block edges, then filter by area and simplify."""
        from shapely import affinity

        t = self.transform
        matrix = [t.a, t.b, t.d, t.e, t.c, t.f]
        pieces = [_Piece(affinity.affine_transform(p.geometry, matrix), p.prob_sum, p.pixels)
                  for p in self._closed + self._merge_open()]
        geometries: list[Any] = []
        areas: list[float] = []
        means: list[float] = []
        if pieces:
            raw_areas = ground_areas([p.geometry for p in pieces], self.crs)
            tolerance = self.simplify_m / self.metres_per_unit if self.metres_per_unit > 0 else 0.0
            for piece, area in zip(pieces, raw_areas, strict=True):
                if area < self.min_area_m2:
                    continue
                geom = piece.geometry
                if tolerance > 0:
                    geom = geom.simplify(tolerance, preserve_topology=True)
                if geom.is_empty:
                    continue
                geometries.append(geom)
                areas.append(area)
                means.append(piece.prob_sum / max(piece.pixels, 1))
        return Footprints(geometries, np.asarray(areas, dtype=np.float64), np.asarray(means, dtype=np.float64))

    def _merge_open(self) -> list[_Piece]:
        if not self._open:
            return []
        import shapely
        from shapely import STRtree

        merged = shapely.unary_union([p.geometry for p in self._open])
        parts = list(getattr(merged, "geoms", [merged]))
        tree = STRtree(parts)
        totals = [_Piece(part, 0.0, 0) for part in parts]
        for piece in self._open:
            point = piece.geometry.representative_point()
            for index in tree.query(point, predicate="intersects"):
                totals[index].prob_sum += piece.prob_sum
                totals[index].pixels += piece.pixels
                break
        return totals


def ground_areas(geometries: list[Any], crs: Any) -> np.ndarray:
    """True ground area in m2 of each polygon given in ``crs`` (any CRS).

    Planar area times the local areal scale at the polygon's centroid, measured on the WGS84
    ellipsoid: two small steps along the CRS axes are measured with Geod.inv and their
    parallelogram gives ground m2 per CRS unit^2. Footprints are small, so the scale is constant
    across one; everything is vectorised over all polygons (thousands per second).
    """
    import shapely
    from pyproj import Geod, Transformer

    geoms = np.asarray(geometries, dtype=object)
    if not len(geoms):
        return np.zeros(0)
    to_lonlat = Transformer.from_crs(crs.to_wkt() if hasattr(crs, "to_wkt") else crs, "EPSG:4326", always_xy=True)
    area = shapely.area(geoms)
    x, y = shapely.get_coordinates(shapely.centroid(geoms)).T
    step = np.maximum(np.sqrt(area) / 10, 1e-9)
    lon0, lat0 = to_lonlat.transform(x, y)
    lon1, lat1 = to_lonlat.transform(x + step, y)
    lon2, lat2 = to_lonlat.transform(x, y + step)
    geod = Geod(ellps="WGS84")
    az1, _, d1 = geod.inv(lon0, lat0, lon1, lat1)
    az2, _, d2 = geod.inv(lon0, lat0, lon2, lat2)
    scale = np.asarray(d1) * np.asarray(d2) * np.abs(np.sin(np.radians(np.asarray(az1) - np.asarray(az2)))) / step**2
    return area * scale


def write_footprints(path: Path, footprints: Footprints, crs: Any) -> None:
    """Write a GeoPackage layer ``footprints`` (written even when empty, so GIS can open it)."""
    import shapely
    from pyogrio.raw import write

    wkb = np.array([shapely.to_wkb(g) for g in footprints.geometries], dtype=object)
    ids = np.arange(1, footprints.count + 1, dtype=np.int64)
    write(str(path), wkb, [ids, footprints.area_m2.round(3), footprints.mean_probability.round(4)],
          ["id", "area_m2", "mean_probability"], layer="footprints", driver="GPKG",
          geometry_type="Polygon", crs=crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs))
