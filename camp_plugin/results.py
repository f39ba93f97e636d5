"""Turn finished jobs into map layers and messages (main thread only)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import QgsLayerTreeGroup, QgsProject, QgsRasterLayer, QgsVectorLayer

from . import resource_path


@dataclass(frozen=True)
class DetectionLayers:
    group: QgsLayerTreeGroup
    probability: QgsRasterLayer
    footprints: QgsVectorLayer


def load_detection(folder: str | Path, name: str, project: QgsProject | None = None) -> DetectionLayers:
    """Add probability.tif and footprints.gpkg of a detect folder as a styled layer group."""
    project = project or QgsProject.instance()
    folder = Path(folder)
    probability = QgsRasterLayer(str(folder / "probability.tif"), "probability")
    footprints = QgsVectorLayer(f"{folder / 'footprints.gpkg'}", "footprints", "ogr")
    for layer, what in ((probability, "probability.tif"), (footprints, "footprints.gpkg")):
        if not layer.isValid():
            raise OSError(f"cannot open {folder / what} as a layer; the detect folder is incomplete")
    apply_style(probability, "probability.qml")
    apply_style(footprints, "footprints.qml")
    group = project.layerTreeRoot().insertGroup(0, f"Camp detections: {name}")
    for layer in (footprints, probability):  # footprints drawn on top
        project.addMapLayer(layer, False)
        group.addLayer(layer)
    return DetectionLayers(group, probability, footprints)


def apply_style(layer: Any, qml: str) -> None:
    message, ok = layer.loadNamedStyle(str(resource_path("styles", qml)))
    if not ok:
        raise OSError(f"cannot apply style {qml}: {message}")
    layer.triggerRepaint()


def _link(path: str | Path) -> str:
    path = Path(path)
    return f'<a href="{path.as_uri()}">{html.escape(str(path))}</a>'


def detect_message(result: dict[str, Any]) -> str:
    """The message bar text after Detect: count, area, threshold, where the files are."""
    count = int(result.get("footprint_count", 0))
    area = float(result.get("total_area_m2", 0.0))
    threshold = result.get("threshold")
    text = f"{count} footprint{'s' if count != 1 else ''}, {area:,.1f} m² in total"
    if threshold is not None:
        text += f" (threshold {float(threshold):.2f})"
    return f"{text}. Files: {_link(result['out'])}" if result.get("out") else text


def train_message(result: dict[str, Any]) -> str:
    """The message bar text after Train: test metrics and a link to the run folder."""
    metrics = result.get("metrics") or result.get("test_metrics") or {}
    shown = [f"{name} {float(value):.3f}" for name, value in sorted(metrics.items())
             if isinstance(value, (int, float)) and any(k in name for k in ("iou", "f1", "precision", "recall"))]
    run = result.get("run") or result.get("out")
    text = "model trained" + (f": {', '.join(shown[:6])}" if shown else "")
    return f"{text}. Run folder: {_link(run)}" if run else text
