"""ArcGIS "Classified Tiles" training data, read and write.

The layout is what ArcGIS Pro's *Export Training Data For Deep Learning* writes (the tests read
real ArcGIS files): ``images/NNNNNNNNN.tif``, ``labels/NNNNNNNNN.tif``
(single band, class values, 0 = NoData/unlabelled), ``map.txt`` (lines
``images\\000000001.tif  labels\\000000001.tif `` with CRLF endings, in any order),
``esri_accumulated_stats.json`` (``"key" : value`` JSON) and ``stats.txt``.

Which class values count as "camp structure" when reading (:func:`positive_values`):
every ``ClassValue`` > 0 listed in the stats file, except

- classes named like a background (``background``, ``bg``, ``nodata``, ``no data``, ``unlabelled``,
  ``unlabeled``, ``other``), and
- when more than one class is listed, a class present in *every* image that holds more than half
  of all labelled pixels: an export that digitised the background as a class (the real example
  has class 1 in all 3382 images with 98% of the pixels, and buildings as class 2).

Without a stats file (or one listing no classes) every value > 0 is positive. We write one
class, value 1, named after what it marks; background stays 0 (NoData), as arcgis.learn expects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np

from .errors import DatasetError
from .fileio import write_text

MAP_FILE = "map.txt"
STATS_FILE = "esri_accumulated_stats.json"
STATS_TEXT = "stats.txt"
ANY_CLASS = tuple(range(1, 256))  # no stats file: every class value > 0 is positive
BACKGROUND_NAMES = frozenset({"background", "bg", "nodata", "no data", "unlabelled", "unlabeled", "other"})


def chip_name(index: int) -> str:
    """ArcGIS numbering: 1 -> ``000000001``."""
    return f"{index:09d}"


# ---------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class EsriClass:
    value: int
    name: str


@dataclass(frozen=True)
class ClassifiedTiles:
    """A Classified Tiles folder: image/label pairs from map.txt, classes and stats when present."""

    root: Path
    pairs: tuple[tuple[Path, Path], ...]
    classes: tuple[EsriClass, ...]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def tile_size(self) -> tuple[int, int] | None:
        if "TileSizeX" in self.stats:
            return int(self.stats["TileSizeX"]), int(self.stats["TileSizeY"])
        return None

    @property
    def positive_values(self) -> tuple[int, ...]:
        return positive_values(self.stats) if self.stats.get("Classes") else ANY_CLASS


def read_map(path: Path) -> list[tuple[Path, Path]]:
    """Pairs (image, label) from ``map.txt``, resolved against its folder (Windows separators)."""
    root = path.parent
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DatasetError(f"{path}:{number}: expected 'images\\NAME.tif  labels\\NAME.tif', got {line.strip()!r}")
        pairs.append(tuple(root.joinpath(*PureWindowsPath(p).parts) for p in parts))
    return pairs  # type: ignore[return-value]


def read_stats(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}; is it ArcGIS's esri_accumulated_stats.json?") from None


def read_classified_tiles(root: str | Path) -> ClassifiedTiles:
    root = Path(root)
    map_file = root / MAP_FILE
    if not map_file.is_file():
        raise DatasetError(f"{root} is not a Classified Tiles folder: no {MAP_FILE}")
    stats = read_stats(root / STATS_FILE) if (root / STATS_FILE).is_file() else {}
    classes = tuple(EsriClass(int(c["ClassValue"]), str(c.get("ClassName", c["ClassValue"])))
                    for c in stats.get("Classes", []))
    return ClassifiedTiles(root, tuple(read_map(map_file)), classes, stats)


def positive_values(stats: dict[str, Any]) -> tuple[int, ...]:
    """Class values that mean "structure" (rule in the module docstring)."""
    classes = [c for c in stats.get("Classes", []) if int(c["ClassValue"]) > 0]
    keep = [c for c in classes if str(c.get("ClassName", "")).strip().lower() not in BACKGROUND_NAMES]
    pixel_stats = stats.get("ClassPixelStats", {})
    per_image = pixel_stats.get("NumImagesPerClass", [])
    per_pixel = pixel_stats.get("NumPixelsPerClass", [])
    total_images = pixel_stats.get("NumImagesTotal") or stats.get("NumTiles")
    if len(keep) > 1 and len(per_image) == len(classes) == len(per_pixel) and sum(per_pixel) > 0:
        background = {int(c["ClassValue"]) for c, n, px in zip(classes, per_image, per_pixel, strict=True)
                      if n == total_images and px > 0.5 * sum(per_pixel)}
        keep = [c for c in keep if int(c["ClassValue"]) not in background]
    return tuple(int(c["ClassValue"]) for c in keep)


# ---------------------------------------------------------------------------- writing

@dataclass(frozen=True)
class LabelCounts:
    """Pixels per class value (class 0 excluded) in one label chip."""

    index: int
    pixels: dict[int, int]

    @classmethod
    def of(cls, index: int, label: np.ndarray) -> LabelCounts:
        values, counts = np.unique(label, return_counts=True)
        return cls(index, {int(v): int(n) for v, n in zip(values, counts, strict=True) if v > 0})


def image_path(root: Path, index: int) -> Path:
    return root / "images" / f"{chip_name(index)}.tif"


def label_path(root: Path, index: int) -> Path:
    return root / "labels" / f"{chip_name(index)}.tif"


def write_metadata(root: Path, chips: Iterable[LabelCounts], classes: dict[int, str],
                   tile_size: int = 256, bands: int = 3) -> None:
    """Write map.txt, esri_accumulated_stats.json and stats.txt for the chips already written."""
    chips = sorted(chips, key=lambda c: c.index)
    lines = "".join(f"images\\{chip_name(c.index)}.tif  labels\\{chip_name(c.index)}.tif \r\n" for c in chips)
    write_text_crlf(root / MAP_FILE, lines)
    stats = accumulated_stats(chips, classes, tile_size, bands)
    write_text(root / STATS_FILE, json.dumps(stats, indent=2, separators=(",", " : ")))
    write_text_crlf(root / STATS_TEXT, stats_text(stats, classes))


def write_text_crlf(path: Path, text: str) -> None:
    from .fileio import write_bytes

    write_bytes(path, text.encode("utf-8"))  # bytes, so no platform newline translation


def accumulated_stats(chips: list[LabelCounts], classes: dict[int, str], tile_size: int, bands: int) -> dict[str, Any]:
    values = sorted(classes)
    per_image = [[c.pixels.get(v, 0) for c in chips] for v in values]
    classes_per_image = [sum(1 for v in values if c.pixels.get(v, 0) > 0) for c in chips]
    return {
        "Version": 1, "NumBands": bands, "TileSizeX": tile_size, "TileSizeY": tile_size,
        "NumClasses": len(values), "NumTiles": len(chips), "OutputFeatures": False,
        "MetaDataMode": "Classified_Tiles",
        "Classes": [{"ClassValue": v, "ClassName": classes[v]} for v in values],
        "ClassPixelStats": {
            "NumClasses": len(values), "NumImagesTotal": len(chips),
            "NumImagesPerClass": [sum(1 for n in px if n > 0) for px in per_image],
            "NumPixelsPerClass": [sum(px) for px in per_image],
            "NumClassesPerImage": _summary(classes_per_image),
            "PixelsPerClass": [_summary(px) for px in per_image],
        },
    }


def _summary(numbers: list[int]) -> dict[str, float | int]:
    if not numbers:
        return {"Min": 0, "Max": 0, "Mean": 0.0, "Sum": 0, "Count": 0}
    return {"Min": min(numbers), "Max": max(numbers), "Mean": sum(numbers) / len(numbers),
            "Sum": sum(numbers), "Count": len(numbers)}


def stats_text(stats: dict[str, Any], classes: dict[int, str]) -> str:
    """The human-readable stats.txt, column for column like ArcGIS's."""
    pixel = stats["ClassPixelStats"]
    per_image = pixel["NumClassesPerImage"]
    size = stats["TileSizeX"]
    rows = [
        f"images = {stats['NumTiles']} *{stats['NumBands']}*{size}*{stats['TileSizeY']}",
        f"classes = {stats['NumClasses']}",
        f"classes per image = [min = {per_image['Min']}, mean = {per_image['Mean']:.2f}, max = {per_image['Max']}]",
        "cls name              cls value     images   pixels      min size   mean size    max size",
    ]
    for entry, images, pixels, sizes in zip(stats["Classes"], pixel["NumImagesPerClass"],
                                            pixel["NumPixelsPerClass"], pixel["PixelsPerClass"], strict=True):
        rows.append(f"{entry['ClassName']:<22}{entry['ClassValue']:>9}{images:>11}{pixels:>11}"
                    f"{sizes['Min']:>12.2f}{sizes['Mean']:>12.2f}{sizes['Max']:>12.2f}")
    return "".join(row + "\r\n" for row in rows)
