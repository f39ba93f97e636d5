"""Imagery from a local raster (GeoTIFF, COG, VRT; any CRS), resampled onto the chip grid.

Each read builds a ``WarpedVRT`` whose grid *is* the requested window in EPSG:3857 (transform,
width, height), so GDAL resamples straight from the source pixels onto the chip and pixels
outside the source or under its nodata/alpha come back invalid. Reuse it wherever a window of a
raster is needed on the Web Mercator grid::

    with RasterSource("ortho.tif") as src:
        chip = src.read_window_3857(tile.bounds_3857, 256, 256)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..tiling import WEB_MERCATOR, Tile
from . import ChipImage


class RasterSource:
    """An open local raster. Not thread-safe (GDAL handles): read from one thread."""

    def __init__(self, path: str | Path, resampling: str = "bilinear") -> None:
        import rasterio
        from rasterio.enums import Resampling

        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"imagery file {self.path} does not exist; give an existing GeoTIFF/VRT "
                             "or an XYZ URL template with {z}/{x}/{y}")
        try:
            self._src = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"cannot open imagery {self.path} as a raster: {exc}") from None
        src = self._src
        if src.crs is None:
            src.close()
            raise InputError(f"imagery {self.path} has no CRS; georeference it (e.g. gdal_edit.py -a_srs) first")
        if src.dtypes[0] != "uint8":
            src.close()
            raise InputError(f"imagery {self.path} is {src.dtypes[0]}, expected 8-bit RGB; convert it with "
                             "gdal_translate -ot Byte -scale")
        self._resampling = Resampling[resampling]
        # RGB(A) -> bands 1-3; a grey single band is repeated into three.
        self._bands = [1, 2, 3] if src.count >= 3 else [1, 1, 1]

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._src.close()

    @property
    def bounds_lonlat(self) -> tuple[float, float, float, float]:
        from rasterio.warp import transform_bounds

        return tuple(transform_bounds(self._src.crs, "EPSG:4326", *self._src.bounds))  # type: ignore[return-value]

    def read_window_3857(self, bounds_3857: tuple[float, float, float, float], width: int, height: int) -> ChipImage:
        """Pixels of ``bounds_3857`` (left, bottom, right, top in EPSG:3857) at ``width`` x ``height``."""
        from rasterio.transform import from_bounds
        from rasterio.vrt import WarpedVRT

        transform = from_bounds(*bounds_3857, width, height)
        with WarpedVRT(self._src, crs=WEB_MERCATOR, transform=transform, width=width, height=height,
                       resampling=self._resampling, add_alpha=not self._has_mask_source()) as vrt:
            rgb = vrt.read(self._bands)
            valid = vrt.dataset_mask() > 0
        return ChipImage(rgb=rgb.astype(np.uint8, copy=False), valid=valid)

    def read_tile(self, tile: Tile, size: int = 256) -> ChipImage:
        return self.read_window_3857(tile.bounds_3857, size, size)

    def _has_mask_source(self) -> bool:
        from rasterio.enums import ColorInterp

        return self._src.nodata is not None or ColorInterp.alpha in self._src.colorinterp
