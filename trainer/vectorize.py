"""Footprint polygons from a mask that arrives in row blocks, with true ground areas.

Detect hands over finished rows block by block (it never holds the whole mask). Each block's
4-connected components are labelled (scipy.ndimage), components too small to pass ``min_area_m2``
are dropped before tracing unless they touch a block edge, and the rest are traced with
``rasterio.features.shapes`` on the label image (one polygon per component, holes included).
Components that do not touch a block edge are complete: they are finished at once (true area,
min-area filter, simplification), so only pieces that may continue are held at full resolution.
Those are joined by a union-find over the labels of the two rows that meet at a block edge, and
only those groups are unioned. Areas are measured on the WGS84 ellipsoid, so they are true
square metres in any CRS, including Web Mercator, whose nominal square metres are about
1/cos^2(lat) too large.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MASK_NODATA = 255
# Drop a component before tracing when its pixels cover less than this share of min_area_m2
# (the exact area filter runs at the end; the margin absorbs the pixel-area estimate).
EARLY_DROP_SHARE = 0.5


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
    """Collects polygons of ``mask == 1`` block by block (top to bottom); :meth:`finish` once at the end.

    ``metres_per_unit`` converts ``simplify_m`` to CRS units and ``pixel_area_m2`` estimates a
    pixel's ground area for the early drop of specks (both at the grid's centre).
    """

    transform: Any  # affine.Affine of the whole grid
    crs: Any  # rasterio CRS
    height: int
    min_area_m2: float = 0.0
    simplify_m: float = 0.0
    metres_per_unit: float = 1.0
    pixel_area_m2: float = 0.0
    _pieces: list[_Piece] = field(default_factory=list)  # open pieces: they touch a block edge
    _parent: list[int] = field(default_factory=list)  # union-find over open piece indexes
    _done: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)  # final batches
    _bottom: tuple[np.ndarray, dict[int, int]] | None = None  # previous block: last row labels, label -> piece

    def add(self, row: int, mask: np.ndarray, probability: np.ndarray) -> None:
        """Trace rows ``row .. row+len(mask)`` (mask uint8 0/1/255, probability float32)."""
        import shapely
        from affine import Affine
        from rasterio.features import shapes
        from scipy import ndimage

        positive = mask == 1
        labels, count = ndimage.label(positive)  # 4-connected, as shapes traces
        if not count:
            self._bottom = None
            return
        flat = labels.ravel()
        pixels = np.bincount(flat, minlength=count + 1)
        sums = np.bincount(flat, weights=np.nan_to_num(probability, nan=0.0).ravel(), minlength=count + 1)
        at_edge = np.zeros(count + 1, dtype=bool)
        if row > 0:
            at_edge[labels[0]] = True
        if row + mask.shape[0] < self.height:
            at_edge[labels[-1]] = True
        keep = at_edge | (pixels * self.pixel_area_m2 >= EARLY_DROP_SHARE * self.min_area_m2
                          if self.pixel_area_m2 > 0 else True)
        keep[0] = False
        kept = np.where(keep[labels], labels, 0).astype(np.int32)
        traced = list(shapes(kept, mask=kept > 0, connectivity=4, transform=Affine.translation(0, row)))
        # GeoJSON text -> shapely in one vectorised call (faster than building rings in Python).
        polygons = shapely.from_geojson([json.dumps(geom) for geom, _ in traced])
        piece_of: dict[int, int] = {}
        closed: list[_Piece] = []
        for polygon, (_, value) in zip(polygons, traced, strict=True):
            label = int(value)
            piece = _Piece(polygon, float(sums[label]), int(pixels[label]))
            if not at_edge[label]:
                closed.append(piece)
                continue
            piece_of[label] = len(self._pieces)
            self._pieces.append(piece)
            self._parent.append(len(self._parent))
        # Complete components are finished now (filtered, simplified), so only the few pieces that
        # may continue in the next block are kept at full resolution.
        self._finalise(closed)
        self._join_across_edge(labels[0], piece_of)
        bottom = labels[-1] if row + mask.shape[0] < self.height else np.zeros(0, dtype=labels.dtype)
        self._bottom = (bottom.copy(), self._flush_complete(piece_of, bottom))

    def _join_across_edge(self, top_labels: np.ndarray, piece_of: dict[int, int]) -> None:
        """Union pieces of the previous block's last row with this block's first row where they touch."""
        if self._bottom is None:
            return
        above, above_pieces = self._bottom
        touching = (above > 0) & (top_labels > 0)
        for a, b in set(zip(above[touching].tolist(), top_labels[touching].tolist(), strict=True)):
            if a in above_pieces and b in piece_of:
                self._union(above_pieces[a], piece_of[b])

    def _flush_complete(self, piece_of: dict[int, int], bottom: np.ndarray) -> dict[int, int]:
        """Finish every group of open pieces that no longer reaches the block's bottom row, so the
        held pieces stay proportional to one block edge, not to the raster. Returns ``piece_of``
        for the bottom row's labels, renumbered."""
        live = {self._find(piece_of[label]) for label in np.unique(bottom).tolist() if label in piece_of}
        groups: dict[int, list[int]] = {}
        for i in range(len(self._pieces)):
            groups.setdefault(self._find(i), []).append(i)
        done = [members for root, members in groups.items() if root not in live]
        self._finalise(self._union_groups([[self._pieces[i] for i in members] for members in done]))
        renumber: dict[int, int] = {}
        pieces: list[_Piece] = []
        parent: list[int] = []
        for root in live:
            for i in groups[root]:
                renumber[i] = len(pieces)
                pieces.append(self._pieces[i])
                parent.append(len(parent) if i == root else -1)
            for i in groups[root]:
                if i != root:
                    parent[renumber[i]] = renumber[root]
        self._pieces, self._parent = pieces, parent
        return {label: renumber[i] for label, i in piece_of.items() if i in renumber}

    def _find(self, i: int) -> int:
        while self._parent[i] != i:
            self._parent[i] = self._parent[self._parent[i]]
            i = self._parent[i]
        return i

    def _union(self, i: int, j: int) -> None:
        ri, rj = self._find(i), self._find(j)
        if ri != rj:
            self._parent[rj] = ri

    @staticmethod
    def _union_groups(groups: list[list[_Piece]]) -> list[_Piece]:
        import shapely

        out = []
        for members in groups:
            if len(members) == 1:
                out.append(members[0])
                continue
            geom = shapely.union_all([m.geometry for m in members])
            out.append(_Piece(geom, sum(m.prob_sum for m in members), sum(m.pixels for m in members)))
        return out

    def finish(self) -> Footprints:
        """Every footprint (the last block has flushed all open pieces; this also covers a caller
        that stopped early)."""
        groups: dict[int, list[_Piece]] = {}
        for i, piece in enumerate(self._pieces):
            groups.setdefault(self._find(i), []).append(piece)
        self._finalise(self._union_groups(list(groups.values())))
        self._pieces, self._parent, self._bottom = [], [], None
        if not self._done:
            return Footprints([], np.zeros(0), np.zeros(0))
        geoms, areas, means = (np.concatenate(parts) for parts in zip(*self._done, strict=True))
        return Footprints(list(geoms), areas, means)

    def _finalise(self, pieces: list[_Piece]) -> None:
        """Pixel -> map coordinates, true area, min-area filter, simplification; appended to the output."""
        import shapely

        if not pieces:
            return
        t = self.transform

        def to_map(xy: np.ndarray) -> np.ndarray:
            return np.column_stack([t.a * xy[:, 0] + t.b * xy[:, 1] + t.c, t.d * xy[:, 0] + t.e * xy[:, 1] + t.f])

        geoms = shapely.transform(np.array([p.geometry for p in pieces], dtype=object), to_map)
        areas = ground_areas(list(geoms), self.crs)
        means = np.array([p.prob_sum / max(p.pixels, 1) for p in pieces])
        keep = areas >= self.min_area_m2
        geoms, areas, means = geoms[keep], areas[keep], means[keep]
        tolerance = self.simplify_m / self.metres_per_unit if self.metres_per_unit > 0 else 0.0
        if tolerance > 0 and len(geoms):
            geoms = _simplify(geoms, tolerance)
        ok = ~shapely.is_empty(geoms)
        self._done.append((geoms[ok], areas[ok], means[ok]))


def _simplify(geoms: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker (fast); the topology-preserving variant only where that broke a polygon."""
    import shapely

    simple = shapely.simplify(geoms, tolerance, preserve_topology=False)
    broken = ~shapely.is_valid(simple) | shapely.is_empty(simple) | (shapely.get_type_id(simple) != 3)
    if broken.any():
        simple[broken] = shapely.simplify(geoms[broken], tolerance, preserve_topology=True)
    return simple


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
