"""One QgsTask for every core job the dock starts: progress, Cancel, and a typed outcome.

``run()`` (worker thread) never raises and never touches the project; it stores a
:class:`TaskOutcome`. ``finished()`` runs on the main thread and hands the outcome to a callback,
which adds layers and pushes messages there (the Deepness pattern).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qgis.core import Qgis, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from trainer.errors import CampError, Cancelled
from trainer.progress import Progress

from .feedback import CallbackProgress

LOG_TAG = "Camp Mapper"


@dataclass(frozen=True)
class TaskOutcome:
    status: str  # "success", "cancelled" or "failed"
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    log: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "success"


class CampTask(QgsTask):
    """Runs ``work(progress) -> result dict`` in a worker thread."""

    message = pyqtSignal(str)  # the latest progress message (queued to the main thread)

    def __init__(self, description: str, work: Callable[[Progress], dict[str, Any]],
                 on_done: Callable[[TaskOutcome], None] | None = None) -> None:
        super().__init__(description, QgsTask.CanCancel)
        self._work = work
        self._on_done = on_done
        self.outcome: TaskOutcome | None = None
        self.progress = CallbackProgress(self.setProgress, self.isCanceled, self.message.emit, self._log)

    def _log(self, line: str) -> None:
        QgsMessageLog.logMessage(line, LOG_TAG, Qgis.Info)

    def run(self) -> bool:
        try:
            result = self._work(self.progress)
        except Cancelled:
            self.outcome = TaskOutcome("cancelled", error="cancelled; no result was written",
                                       log=tuple(self.progress.log_lines))
            return False
        except CampError as exc:
            status = "cancelled" if self.isCanceled() else "failed"
            self.outcome = TaskOutcome(status, error=str(exc), log=tuple(self.progress.log_lines))
            return False
        except Exception as exc:  # noqa: BLE001 - a task must report, not crash QGIS
            QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.Critical)
            self.outcome = TaskOutcome("failed", error=f"unexpected error: {type(exc).__name__}: {exc} "
                                       "(details in View > Panels > Log Messages > Camp Mapper)",
                                       log=tuple(self.progress.log_lines))
            return False
        if self.isCanceled():
            self.outcome = TaskOutcome("cancelled", error="cancelled; no result was written")
            return False
        self.outcome = TaskOutcome("success", result=result, log=tuple(self.progress.log_lines))
        return True

    def detach(self) -> None:
        """Forget the completion callback (its widgets are going away)."""
        self._on_done = None

    def cancel(self) -> None:
        self._log(f"{self.description()}: cancel requested")
        super().cancel()

    def finished(self, ok: bool) -> None:  # noqa: FBT001 - QgsTask's signature
        outcome = self.outcome or TaskOutcome("cancelled" if self.isCanceled() else "failed",
                                              error="the task ended before it started")
        self.outcome = outcome
        if self._on_done is not None:
            self._on_done(outcome)
