"""Where camp jobs run: in ArcGIS Pro's own Python, or in a configured Python environment.

ArcGIS Pro's default environment (arcgispro-py3) is read-only and rarely has torch and Lightning,
and a crashing CUDA job must not take Pro down, so most users point the toolbox at a separate
environment. The setting comes, first match wins, from:

1. the environment variables ``CAMP_PYTHON`` (path to python.exe) and ``CAMP_EXECUTION``;
2. ``camp_settings.json`` beside CampDetection.pyt;
3. ``%APPDATA%\\camp-mapper\\settings.json`` (``~/.config/camp-mapper/settings.json`` elsewhere);

each a JSON object ``{"python": "C:\\\\...\\\\python.exe", "execution": "auto"}``. ``execution`` is
``auto`` (in process when this Python has the packages, else the configured Python),
``in_process`` or ``subprocess``: the same names as the QGIS plugin's setting.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from . import TOOLBOX_DIR

EXECUTIONS = ("auto", "in_process", "subprocess")
SETTINGS_NAME = "camp_settings.json"
# Import names of the packages a job needs in the interpreter that runs it.
JOB_PACKAGES = ("torch", "lightning", "rasterio", "shapely", "pyproj", "pyogrio", "mercantile", "onnxruntime")
DOCS_HINT = "see docs/ARCGIS.md, 'Python environment'"


class SettingsError(ValueError):
    """The toolbox settings point nowhere usable; the message says what to change."""


@dataclass(frozen=True)
class Settings:
    python: str = ""  # interpreter for out-of-process jobs ("" = none configured)
    execution: str = "auto"
    source: str = "defaults"  # where the values came from, for messages


@dataclass(frozen=True)
class Plan:
    """How a job will run: in this process, or with ``python`` through trainer.runner."""

    in_process: bool
    python: str = ""

    def describe(self) -> str:
        return "in ArcGIS's Python" if self.in_process else f"in the Python environment {self.python}"


def user_settings_file() -> Path:
    base = os.environ.get("APPDATA") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "camp-mapper" / "settings.json"


def settings_files() -> tuple[Path, ...]:
    return (TOOLBOX_DIR / SETTINGS_NAME, user_settings_file())


def load_settings() -> Settings:
    """The effective settings: environment variables over the first settings file found."""
    stored, source = {}, "defaults"
    for path in settings_files():
        if path.is_file():
            stored, source = _read_json(path), str(path)
            break
    python = os.environ.get("CAMP_PYTHON") or str(stored.get("python", ""))
    execution = os.environ.get("CAMP_EXECUTION") or str(stored.get("execution", "auto"))
    if os.environ.get("CAMP_PYTHON") or os.environ.get("CAMP_EXECUTION"):
        source = "environment variables CAMP_PYTHON/CAMP_EXECUTION"
    if execution not in EXECUTIONS:
        raise SettingsError(f"execution {execution!r} (from {source}) must be one of {', '.join(EXECUTIONS)}")
    return Settings(python=python, execution=execution, source=source)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SettingsError(f"cannot read the toolbox settings {path}: {exc}; fix or delete the file") from None
    if not isinstance(data, dict):
        raise SettingsError(f"the toolbox settings {path} must hold a JSON object like {{\"python\": \"...\"}}")
    return data


def missing_packages() -> list[str]:
    """Job packages this interpreter lacks (found without importing them: torch is slow to load)."""
    return [name for name in JOB_PACKAGES if importlib.util.find_spec(name) is None]


def plan_execution(settings: Settings | None = None) -> Plan:
    """Decide where jobs run, or raise :class:`SettingsError` saying how to set an environment up."""
    settings = settings or load_settings()
    missing = missing_packages()
    if settings.execution == "in_process" or (settings.execution == "auto" and not missing):
        if missing:
            raise SettingsError(
                f"execution is 'in_process' but ArcGIS's Python ({sys.executable}) lacks {', '.join(missing)}; "
                f"install them into a clone of arcgispro-py3 or set CAMP_PYTHON ({DOCS_HINT})")
        return Plan(in_process=True)
    if not settings.python:
        raise SettingsError(
            f"ArcGIS's Python ({sys.executable}) lacks {', '.join(missing) or 'nothing'} and no Python "
            f"environment is configured for camp jobs: set CAMP_PYTHON to its python.exe, or write "
            f"{{\"python\": \"C:\\\\path\\\\to\\\\python.exe\"}} to {settings_files()[0]} ({DOCS_HINT})")
    if not Path(settings.python).is_file():
        raise SettingsError(f"the configured Python {settings.python} (from {settings.source}) does not exist; "
                            f"point CAMP_PYTHON or the settings file at an existing python.exe ({DOCS_HINT})")
    return Plan(in_process=False, python=settings.python)
