"""Helpers of the CampDetection.pyt ArcGIS Pro toolbox: settings, arcpy adapters, job execution.

Thin on purpose: every data and model decision lives in the ``trainer`` core. These modules only
turn tool parameters into the core's job configs, run the job (in ArcGIS's Python or in a
configured environment through :mod:`trainer.runner`) and hand progress, messages, cancel and
outputs back to ArcGIS. They import arcpy lazily (``import arcpy`` inside functions), so they can
be loaded and tested without ArcGIS, and nothing here imports torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

TOOLBOX_DIR = Path(__file__).resolve().parent.parent


def core_root() -> Path:
    """Folder that holds the ``trainer`` package: a copy bundled beside the .pyt, else the checkout."""
    bundled = TOOLBOX_DIR
    return bundled if (bundled / "trainer" / "__init__.py").is_file() else TOOLBOX_DIR.parent


def make_core_importable() -> None:
    """Let ``import trainer`` work without pip-installing it (ArcGIS loads the .pyt from a folder)."""
    root = str(core_root())
    if root not in sys.path:
        sys.path.insert(0, root)
