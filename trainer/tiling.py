"""Pure XYZ tile maths: which tiles cover an extent, where each lies, how to name it in a URL.

No I/O here. Tiles follow the XYZ (Google/OSM) scheme, y growing southwards, in Web Mercator
(EPSG:3857). The chip grid of a dataset is the tile grid at one zoom: one 256x256 chip per tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mercantile
from affine import Affine

from .config import BBox, validate_bbox, validate_zoom
from .errors import InputError, TooManyTilesError

TILE_SIZE = 256
EARTH_RADIUS_M = 6378137.0
WEB_MERCATOR = "EPSG:3857"


@dataclass(frozen=True, order=True)
class Tile:
    x: int
    y: int
    z: int

    @property
    def name(self) -> str:
        """File stem of this tile's chip, e.g. ``21-1238448-1046528`` (z-x-y)."""
        return f"{self.z}-{self.x}-{self.y}"

    @property
    def tms_y(self) -> int:
        """Row in TMS order (y growing northwards), for ``{-y}`` templates."""
        return (1 << self.z) - 1 - self.y

    @property
    def quadkey(self) -> str:
        return mercantile.quadkey(self.x, self.y, self.z)

    @property
    def bounds_3857(self) -> tuple[float, float, float, float]:
        b = mercantile.xy_bounds(self.x, self.y, self.z)
        return (b.left, b.bottom, b.right, b.top)

    @property
    def bounds_lonlat(self) -> tuple[float, float, float, float]:
        b = mercantile.bounds(self.x, self.y, self.z)
        return (b.west, b.south, b.east, b.north)

    def transform(self, size: int = TILE_SIZE) -> Affine:
        """Affine transform of a ``size`` x ``size`` chip of this tile in EPSG:3857."""
        left, bottom, right, top = self.bounds_3857
        return Affine((right - left) / size, 0.0, left, 0.0, -(top - bottom) / size, top)

    @classmethod
    def parse(cls, name: str) -> Tile:
        """Inverse of :attr:`name`; also accepts ``OAM-x-y-z`` names of fAIr-style datasets."""
        stem = name.rsplit("/", 1)[-1].split(".")[0]
        parts = stem.split("-")
        try:
            if parts[0].upper() == "OAM" and len(parts) == 4:
                return cls(int(parts[1]), int(parts[2]), int(parts[3]))
            z, x, y = (int(p) for p in parts[-3:])
            return cls(x, y, z)
        except (ValueError, IndexError):
            raise InputError(f"cannot read a tile z-x-y from the name {name!r}") from None


def tiles_for_bbox(bbox: BBox, zoom: int, max_tiles: int | None = None) -> list[Tile]:
    """Tiles at ``zoom`` that intersect a lon/lat bbox, row by row from the north-west.

    Raises :class:`TooManyTilesError` (saying how many) before listing more than ``max_tiles``.
    """
    west, south, east, north = validate_bbox(bbox)
    validate_zoom(zoom)
    # Shrink the far edges by a hair so a bbox ending exactly on a tile edge does not pull in
    # the next row/column of tiles.
    eps = 1e-9
    nw = mercantile.tile(west, north, zoom)
    se = mercantile.tile(max(west, east - eps), min(north, south + eps), zoom)
    count = (se.x - nw.x + 1) * (se.y - nw.y + 1)
    if max_tiles is not None and count > max_tiles:
        raise TooManyTilesError(
            f"the extent needs {count} tiles at zoom {zoom}, more than the cap of {max_tiles}; "
            f"use a smaller extent, a lower zoom, or raise the cap (--max-tiles {count})"
        )
    return [Tile(x, y, zoom) for y in range(nw.y, se.y + 1) for x in range(nw.x, se.x + 1)]


def ground_resolution(lat: float, zoom: int, tile_size: int = TILE_SIZE) -> float:
    """True ground size of one pixel in metres at ``lat`` (Web Mercator stretches by 1/cos(lat))."""
    return math.cos(math.radians(lat)) * 2 * math.pi * EARTH_RADIUS_M / (tile_size * (1 << zoom))


def format_tile_url(template: str, tile: Tile) -> str:
    """Fill an XYZ/TMS template: {z} {x} {y}, {-y} (TMS row order), {q} (quadkey), {s} (a/b/c)."""
    url = template.replace("{-y}", str(tile.tms_y))
    replacements = {"{z}": tile.z, "{x}": tile.x, "{y}": tile.y, "{q}": tile.quadkey,
                    "{s}": "abc"[(tile.x + tile.y) % 3]}
    for key, value in replacements.items():
        url = url.replace(key, str(value))
    return url


def is_tile_template(imagery: str) -> bool:
    """True for XYZ/TMS templates (``{z}`` with ``{x}``, or ``{q}``)."""
    return ("{z}" in imagery and "{x}" in imagery) or "{q}" in imagery
