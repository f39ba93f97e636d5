"""Plugin settings (QgsSettings under ``camp_mapper/``), with environment overrides for headless use.

``CAMP_PYTHON`` and ``CAMP_EXECUTION`` override the stored values, so ``qgis_process`` on a server
can point the algorithms at a venv without a GUI session ever having saved a setting.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qgis.core import QgsSettings

Execution = Literal["auto", "in_process", "subprocess"]
EXECUTIONS: tuple[Execution, ...] = ("auto", "in_process", "subprocess")
PREFIX = "camp_mapper"


@dataclass(frozen=True)
class CampSettings:
    python: str = ""  # interpreter for out-of-process jobs ("" = none configured)
    execution: Execution = "auto"  # auto: in process if QGIS's Python has the ML stack
    runs_dir: str = ""  # where new runs and detections go
    last_model: str = ""  # run folder of the last model trained from the dock

    @property
    def runs_path(self) -> Path:
        return Path(self.runs_dir).expanduser() if self.runs_dir else Path.home() / "camp-mapper"

    @classmethod
    def load(cls) -> CampSettings:
        s = QgsSettings()
        execution = os.environ.get("CAMP_EXECUTION") or s.value(f"{PREFIX}/execution", "auto", type=str)
        return cls(
            python=os.environ.get("CAMP_PYTHON") or s.value(f"{PREFIX}/python", "", type=str),
            execution=execution if execution in EXECUTIONS else "auto",
            runs_dir=s.value(f"{PREFIX}/runs_dir", "", type=str),
            last_model=s.value(f"{PREFIX}/last_model", "", type=str),
        )

    def save(self) -> None:
        s = QgsSettings()
        for key in ("python", "execution", "runs_dir", "last_model"):
            s.setValue(f"{PREFIX}/{key}", getattr(self, key))
