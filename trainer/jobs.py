"""The job API: the one entry point every front end calls.

``run_job("detect", DetectConfig(...), progress)`` runs a job in this process and returns its
typed result (a dataclass with ``to_dict()``). The CLI, the QGIS Processing algorithms, the QGIS
dialogs and the ArcGIS tools all come through here, in process or through
:mod:`trainer.runner` (``python -m trainer job KIND``) in another interpreter.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import JOB_CONFIGS
from .errors import InputError
from .progress import NullProgress, Progress

# kind -> (module, function); modules are imported only when their job runs (torch is heavy).
_JOBS: dict[str, tuple[str, str]] = {
    "fetch": ("trainer.fetch", "run_fetch"),
    "train": ("trainer.training", "run_train"),
    "detect": ("trainer.detect", "run_detect"),
    "evaluate": ("trainer.evaluate", "run_evaluate"),
    "package": ("trainer.export", "run_export"),
    "run": ("trainer.pipeline", "run_pipeline"),
}

JOB_KINDS = tuple(_JOBS)


def run_job(kind: str, config: Any, progress: Progress | None = None) -> Any:
    """Run job ``kind`` with ``config`` (its config dataclass or a dict of its fields)."""
    if kind not in _JOBS:
        raise InputError(f"unknown job {kind!r}; choose from {', '.join(JOB_KINDS)}")
    if isinstance(config, dict):
        config = JOB_CONFIGS[kind].from_dict(config)
    elif not isinstance(config, JOB_CONFIGS[kind]):
        raise InputError(f"job {kind!r} takes a {JOB_CONFIGS[kind].__name__}, got {type(config).__name__}")
    module_name, function = _JOBS[kind]
    job = getattr(importlib.import_module(module_name), function)
    return job(config, progress or NullProgress())
