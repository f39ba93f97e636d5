"""Chips on the EPSG:3857 tile grid: label rasterisation and GeoTIFF writing.

A chip is one tile: 256x256 pixels with the tile's exact transform (:meth:`Tile.transform`).
Labels are projected to EPSG:3857 *before* rasterising, so a footprint lands on the same pixels
as the imagery under it (rasterising lon/lat onto a mercator grid would shift it north/south).
Files are written atomically: a cancelled fetch leaves only complete chips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .fileio import atomic_path
from .sources import ChipImage
from .sources.vector import reproject
from .tiling import TILE_SIZE, WEB_MERCATOR, Tile

# Fast deflate: chips are written on the fetch loop's thread, and level 1 is ~3x quicker than 6.
_GTIFF = {"driver": "GTiff", "compress": "deflate", "zlevel": 1, "predictor": 2, "tiled": False}


def project_labels(polygons_lonlat: list) -> list:
    """Lon/lat polygons -> EPSG:3857."""
    return reproject(polygons_lonlat, "EPSG:4326", WEB_MERCATOR)


class LabelIndex:
    """Polygons in EPSG:3857 with a spatial index, to rasterise one chip at a time quickly."""

    def __init__(self, polygons_3857: list) -> None:
        from shapely import STRtree

        self.polygons = list(polygons_3857)
        self._tree = STRtree(self.polygons) if self.polygons else None

    def intersecting(self, bounds: tuple[float, float, float, float]) -> list:
        from shapely.geometry import box

        if self._tree is None:
            return []
        area = box(*bounds)
        return [self.polygons[i] for i in self._tree.query(area, predicate="intersects")]

    def mask(self, tile: Tile, size: int = TILE_SIZE) -> np.ndarray:
        return rasterize_mask(self.intersecting(tile.bounds_3857), tile, size)


def rasterize_mask(polygons_3857: list, tile: Tile, size: int = TILE_SIZE) -> np.ndarray:
    """uint8 (size, size) mask, 1 where a pixel centre falls inside a polygon, else 0."""
    from rasterio.features import rasterize

    if not polygons_3857:
        return np.zeros((size, size), dtype=np.uint8)
    return rasterize(((p, 1) for p in polygons_3857), out_shape=(size, size), transform=tile.transform(size),
                     fill=0, dtype="uint8")


def write_chip(path: Path, image: ChipImage, tile: Tile) -> Path:
    """3-band uint8 GeoTIFF; nodata pixels (alpha 0) go into an internal GDAL mask band."""
    import rasterio

    rgb = image.rgb
    size = rgb.shape[-1]
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", width=size, height=rgb.shape[1], count=3, dtype="uint8",
                           crs=WEB_MERCATOR, transform=tile.transform(size), photometric="RGB", **_GTIFF) as dst:
            dst.write(rgb)
            if not image.valid.all():
                dst.write_mask(image.valid.astype(np.uint8) * 255)
    return path


def write_mask(path: Path, mask: np.ndarray, tile: Tile) -> Path:
    """1-band uint8 GeoTIFF of class values on the chip's grid."""
    import rasterio

    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", width=mask.shape[1], height=mask.shape[0], count=1, dtype="uint8",
                           crs=WEB_MERCATOR, transform=tile.transform(mask.shape[1]), **_GTIFF) as dst:
            dst.write(mask, 1)
    return path


def read_mask(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)
