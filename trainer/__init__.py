"""Camp Mapper trainer core: fetch chips and labels, train, export, detect, evaluate.

The package imports nothing heavy at start-up; torch, Lightning, MLflow and ONNX Runtime are
imported inside the functions that need them, so `camp --help`, the QGIS plugin and the ArcGIS
toolbox load fast.
"""

from __future__ import annotations

import configparser
from pathlib import Path


def _read_version() -> str:
    # metadata.txt (the QGIS plugin's metadata) is the single source of the version. It sits at
    # the repository root in a checkout and beside the package in the plugin zip.
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "metadata.txt", here / "metadata.txt"):
        if candidate.is_file():
            parser = configparser.ConfigParser()
            parser.read(candidate, encoding="utf-8")
            return parser.get("general", "version", fallback="0+unknown")
    try:
        from importlib.metadata import version

        return version("camp-trainer")
    except Exception:
        return "0+unknown"


__version__ = _read_version()
