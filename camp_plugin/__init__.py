"""Camp Mapper QGIS plugin: Train and Detect on the map extent, and the ``camp`` Processing provider.

The ML core (package ``trainer``) is bundled inside the plugin folder in the release zip and sits
beside ``camp_plugin/`` in a development checkout; :func:`ensure_trainer_importable` makes
whichever copy travels with this plugin importable before anything else imports it.
"""

from __future__ import annotations

import sys
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent


def core_root() -> Path:
    """The folder that holds the ``trainer`` package this plugin was shipped with."""
    bundled = PLUGIN_DIR / "trainer"
    return PLUGIN_DIR if bundled.is_dir() else PLUGIN_DIR.parent


def ensure_trainer_importable() -> None:
    # First on sys.path, so a different camp-trainer installed in QGIS's Python cannot shadow the
    # copy whose job API this plugin was written against.
    root = str(core_root())
    if root not in sys.path:
        sys.path.insert(0, root)


def resource_path(*parts: str) -> Path:
    """A file under resources/ (inside the plugin in the zip, at the repo root in a checkout)."""
    for base in (PLUGIN_DIR / "resources", PLUGIN_DIR.parent / "resources"):
        if base.is_dir():
            return base.joinpath(*parts)
    return PLUGIN_DIR.joinpath("resources", *parts)


def classFactory(iface):  # noqa: N802, ANN001, ANN201 - the name and signature QGIS calls
    ensure_trainer_importable()
    from .plugin import CampPlugin

    return CampPlugin(iface)
