"""arcpy.conversion stand-in: ExportFeatures writes a real file (pyogrio), honouring a GeoPackage
table address (``x.gpkg/main.name``) like ArcGIS."""

from __future__ import annotations

from typing import Any


def ExportFeatures(in_features: Any, out_features: str, *args: Any, **kwargs: Any) -> list[str]:  # noqa: N802
    from pyogrio import raw

    import arcpy

    table = arcpy._GPKG_TABLE.match(str(in_features))
    source, layer = (table["file"], table["layer"]) if table else (str(in_features), None)
    meta, _, geometry, fields = raw.read(source, layer=layer)
    raw.write(out_features, geometry, fields, fields=meta["fields"], crs=meta["crs"],
              geometry_type=meta["geometry_type"], encoding=meta.get("encoding"))
    arcpy._record("ExportFeatures", str(in_features), out_features)
    return [out_features]
