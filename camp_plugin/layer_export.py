"""Read any QGIS raster layer (XYZ/TMS, WMS, local) for an extent into a GeoTIFF the core can use.

Reading goes through QGIS itself, so its tile cache, proxy settings and authentication apply to
the imagery the analyst sees. The plan (extent, grid, a clone of the layer's provider) is made on
the main thread; the pixels are pulled in a worker thread from the clone, never from the live
provider that the map canvas is using. Local GDAL rasters need no copy: the core reads them.
"""

from __future__ import annotations

import math
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsDistanceArea,
    QgsPointXY,
    QgsProject,
    QgsRasterBlockFeedback,
    QgsRasterDataProvider,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsRasterProjector,
    QgsRectangle,
    QgsUnitTypes,
)

from trainer.config import BBox
from trainer.errors import Cancelled, InputError, TileFetchError
from trainer.fileio import atomic_path

MERCATOR = "EPSG:3857"
LONLAT = "EPSG:4326"
TILE_SIZE = 256
MERCATOR_HALF_WORLD = math.pi * 6378137.0
MAX_SIDE_PX = 30000  # one GeoTIFF side; beyond this, ask for a smaller extent or a lower zoom


def crs(authid: str) -> QgsCoordinateReferenceSystem:
    return QgsCoordinateReferenceSystem(authid)


def transform_extent(extent: QgsRectangle, source: QgsCoordinateReferenceSystem,
                     target: QgsCoordinateReferenceSystem) -> QgsRectangle:
    if source == target:
        return QgsRectangle(extent)
    transform = QgsCoordinateTransform(source, target, QgsProject.instance().transformContext())
    return transform.transformBoundingBox(extent)


def extent_to_bbox(extent: QgsRectangle, extent_crs: QgsCoordinateReferenceSystem) -> BBox:
    """Lon/lat W,S,E,N of an extent in any CRS (the core's bbox convention)."""
    r = transform_extent(extent, extent_crs, crs(LONLAT))
    return (r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum())


def mercator_resolution(zoom: int) -> float:
    """Nominal EPSG:3857 metres per pixel of the XYZ tile grid at ``zoom``."""
    return 2 * MERCATOR_HALF_WORLD / (TILE_SIZE * (1 << zoom))


def snap_to_tiles(extent_3857: QgsRectangle, zoom: int) -> QgsRectangle:
    """Grow an EPSG:3857 extent outwards to whole tiles at ``zoom``, so chips are complete tiles."""
    size = TILE_SIZE * mercator_resolution(zoom)

    def down(v: float) -> float:
        return -MERCATOR_HALF_WORLD + math.floor((v + MERCATOR_HALF_WORLD) / size + 1e-9) * size

    def up(v: float) -> float:
        return -MERCATOR_HALF_WORLD + math.ceil((v + MERCATOR_HALF_WORLD) / size - 1e-9) * size

    return QgsRectangle(down(extent_3857.xMinimum()), down(extent_3857.yMinimum()),
                        up(extent_3857.xMaximum()), up(extent_3857.yMaximum()))


def pixel_size_for_ground(extent: QgsRectangle, extent_crs: QgsCoordinateReferenceSystem,
                          ground_m: float) -> float:
    """Pixel size in ``extent_crs`` units that gives ``ground_m`` metres on the ground at its centre."""
    measure = QgsDistanceArea()
    measure.setSourceCrs(extent_crs, QgsProject.instance().transformContext())
    measure.setEllipsoid("WGS84")
    y = extent.center().y()
    ground_width = measure.measureLine(QgsPointXY(extent.xMinimum(), y), QgsPointXY(extent.xMaximum(), y))
    if ground_width <= 0:
        raise InputError(f"cannot measure the extent {extent.toString(3)}; is it empty?")
    return extent.width() * ground_m / ground_width


def local_raster_path(layer: QgsRasterLayer) -> str | None:
    """The file behind a GDAL layer (the core reads it directly), else None."""
    if layer.providerType() != "gdal":
        return None
    path = layer.source().split("|")[0]
    return path if Path(path).is_file() else None


def xyz_template(layer: QgsRasterLayer) -> str | None:
    """The URL template of an XYZ layer (``type=xyz&url=...``), else None."""
    if layer.providerType() != "wms":
        return None
    params = urllib.parse.parse_qs(layer.source(), keep_blank_values=True)
    if params.get("type") != ["xyz"] or not params.get("url"):
        return None
    return params["url"][0]


def xyz_max_zoom(layer: QgsRasterLayer) -> int | None:
    params = urllib.parse.parse_qs(layer.source(), keep_blank_values=True)
    try:
        return int(params["zmax"][0])
    except (KeyError, ValueError, IndexError):
        return None


@dataclass
class RasterExportPlan:
    """Everything a worker thread needs to write one raster; built on the main thread."""

    provider: QgsRasterDataProvider  # a clone, owned by this plan until written
    source_crs: QgsCoordinateReferenceSystem
    crs: QgsCoordinateReferenceSystem
    extent: QgsRectangle  # in ``crs``
    width: int
    height: int
    layer_name: str
    transform_context: QgsCoordinateTransformContext

    @property
    def pixel_size(self) -> float:
        return self.extent.width() / self.width


def plan_export(layer: QgsRasterLayer, extent: QgsRectangle, extent_crs: QgsCoordinateReferenceSystem,
                target_crs: QgsCoordinateReferenceSystem, pixel_size: float) -> RasterExportPlan:
    """Check that ``extent`` overlaps ``layer`` and lay out the output grid (main thread only)."""
    if layer is None or not layer.isValid():
        raise InputError("no valid imagery layer selected; add a raster layer (XYZ, WMS or a GeoTIFF) "
                         "to the project and choose it as imagery")
    target_extent = transform_extent(extent, extent_crs, target_crs)
    layer_extent = transform_extent(layer.extent(), layer.crs(), target_crs)
    overlap = target_extent.intersect(layer_extent)
    if overlap.isEmpty() or overlap.width() <= 0 or overlap.height() <= 0:
        raise InputError(
            f"the extent {target_extent.toString(2)} ({target_crs.authid()}) does not overlap the imagery "
            f"layer '{layer.name()}' ({layer_extent.toString(2)}); pan the map onto the layer or pick "
            "another extent")
    width = math.ceil(target_extent.width() / pixel_size - 1e-6)
    height = math.ceil(target_extent.height() / pixel_size - 1e-6)
    if max(width, height) > MAX_SIDE_PX:
        raise InputError(
            f"the extent needs a {width} x {height} pixel image of '{layer.name()}' at {pixel_size:.3g} "
            f"{QgsUnitTypes.toAbbreviatedString(target_crs.mapUnits())}/px, more than {MAX_SIDE_PX} px a side; "
            "choose a smaller extent or a lower zoom / coarser resolution")
    grid = QgsRectangle(target_extent.xMinimum(), target_extent.yMaximum() - height * pixel_size,
                        target_extent.xMinimum() + width * pixel_size, target_extent.yMaximum())
    provider = layer.dataProvider().clone()
    if provider is None:
        raise InputError(f"the layer '{layer.name()}' cannot be read outside the map canvas (no provider clone)")
    return RasterExportPlan(provider, layer.crs(), target_crs, grid, max(width, 1), max(height, 1), layer.name(),
                            QgsProject.instance().transformContext())


def write_geotiff(plan: RasterExportPlan, path: str | Path, feedback: QgsRasterBlockFeedback | None = None) -> Path:
    """Render the plan into a tiled, compressed GeoTIFF (worker thread); atomic: no partial file."""
    pipe = QgsRasterPipe()
    if not pipe.set(plan.provider):
        raise TileFetchError(f"cannot read the layer '{plan.layer_name}' through a raster pipe")
    if plan.source_crs != plan.crs:
        projector = QgsRasterProjector()
        projector.setCrs(plan.source_crs, plan.crs, plan.transform_context)
        pipe.set(projector)
    with atomic_path(path) as tmp:
        writer = QgsRasterFileWriter(str(tmp))
        writer.setOutputFormat("GTiff")
        writer.setCreateOptions(["COMPRESS=DEFLATE", "TILED=YES", "BIGTIFF=IF_SAFER"])
        error = writer.writeRaster(pipe, plan.width, plan.height, plan.extent, plan.crs,
                                   plan.transform_context, feedback)
        if feedback is not None and feedback.isCanceled():
            raise Cancelled("cancelled while reading the imagery layer")
        if error != QgsRasterFileWriter.NoError:
            raise TileFetchError(
                f"reading the layer '{plan.layer_name}' for {plan.extent.toString(2)} failed "
                f"(QgsRasterFileWriter error {int(error)}); check that the layer draws on the map there")
    return Path(path)
