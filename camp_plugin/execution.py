"""Run a core job in QGIS's own Python or in a configured interpreter, with one interface.

Both paths take a :class:`trainer.progress.Progress` (a QgsTask or Processing feedback adapter),
stream progress into it, honour its ``cancelled()`` and return the job's result as a dict (the
``to_dict()`` of the core's result dataclass), so callers never care where the job ran.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

from trainer.errors import CampError, DependencyError
from trainer.progress import Progress

from .settings import CampSettings

# What a job imports inside QGIS when it runs in process; find_spec does not import them.
IN_PROCESS_MODULES = ("torch", "lightning", "onnxruntime", "rasterio", "shapely", "pyproj", "mercantile")


def missing_in_process_modules() -> list[str]:
    return [m for m in IN_PROCESS_MODULES if importlib.util.find_spec(m) is None]


@dataclass(frozen=True)
class JobRunner:
    """Where jobs run: ``python`` is None for in process."""

    python: str | None

    @property
    def in_process(self) -> bool:
        return self.python is None

    def describe(self) -> str:
        return "in QGIS's Python" if self.in_process else f"in {self.python}"

    def run(self, kind: str, config: Any, progress: Progress) -> dict[str, Any]:
        """Run job ``kind`` with ``config`` (a config dataclass); raise CampError subclasses on failure."""
        if self.in_process:
            from trainer.jobs import run_job

            return run_job(kind, config, progress).to_dict()
        from trainer.runner import run_job_subprocess

        outcome = run_job_subprocess(kind, config.to_dict(), python=self.python, on_progress=progress.report,
                                     on_log=progress.log, is_cancelled=progress.cancelled)
        return outcome.raise_for_error()


def resolve_runner(settings: CampSettings | None = None) -> JobRunner:
    """Pick the interpreter from the settings; explain what to do when none can run jobs.

    "auto" prefers a configured Python (out of process: a crash there cannot take QGIS down, and
    its PROJ/GDAL wheels never meet QGIS's own in one process), then QGIS's Python if it has the
    packages.
    """
    settings = settings or CampSettings.load()
    if settings.execution == "subprocess" or (settings.execution == "auto" and settings.python):
        if not settings.python:
            raise DependencyError(
                "jobs are set to run in a separate Python, but none is configured: open Camp Mapper "
                "Settings, set 'Python for jobs' (e.g. a venv's bin/python) and click Check environment; "
                "or set CAMP_PYTHON for qgis_process")
        return JobRunner(settings.python)
    missing = missing_in_process_modules()
    if missing:
        raise DependencyError(
            f"QGIS's Python lacks {', '.join(missing)}, so jobs cannot run inside QGIS and no separate Python "
            "is configured. Open Camp Mapper Settings, set 'Python for jobs' to a Python with torch "
            "(e.g. a venv's bin/python) and click Check environment; or set CAMP_PYTHON for qgis_process.")
    return JobRunner(None)


def check_interpreter(python: str | None, timeout: float = 120.0) -> dict[str, Any]:
    """The environment report of ``python`` (None: QGIS's own Python) as a dict.

    Another interpreter is asked out of process (``python -m trainer env --json``) so that a broken
    install there cannot crash QGIS.
    """
    if python is None:
        from trainer.environment import check_environment

        return check_environment().to_dict()
    from trainer.runner import ROOT

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    try:
        proc = subprocess.run([python, "-m", "trainer", "env", "--json"], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CampError(f"cannot run {python}: {exc}. Give the path of a Python interpreter "
                        "(e.g. /path/to/venv/bin/python or python.exe).") from exc
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        tail = (proc.stderr or proc.stdout).strip()[-600:]
        raise CampError(f"{python} could not report its environment (exit code {proc.returncode}):\n{tail}") from None
