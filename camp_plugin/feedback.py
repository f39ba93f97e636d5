"""Adapters from the core's Progress protocol to QGIS: Processing feedback and QgsTask."""

from __future__ import annotations

import threading
from collections.abc import Callable

from qgis.core import QgsFeedback, QgsProcessingFeedback


class FeedbackProgress:
    """Core progress -> ``QgsProcessingFeedback`` (progress bar, log, Cancel button)."""

    def __init__(self, feedback: QgsFeedback | None) -> None:
        self._feedback = feedback or QgsProcessingFeedback()
        self._last_message = ""

    def report(self, fraction: float, message: str = "") -> None:
        self._feedback.setProgress(100.0 * max(0.0, min(1.0, fraction)))
        if message and message != self._last_message and isinstance(self._feedback, QgsProcessingFeedback):
            self._feedback.setProgressText(message)
        self._last_message = message or self._last_message

    def cancelled(self) -> bool:
        return self._feedback.isCanceled()

    def log(self, message: str) -> None:
        if isinstance(self._feedback, QgsProcessingFeedback):
            self._feedback.pushInfo(message)


class CallbackProgress:
    """Core progress -> callables (used by QgsTask: ``setProgress``, a message signal, ``isCanceled``).

    Keeps the last message so the dock can show "epoch 3/10: loss 0.41 IoU 0.62" under the bar.
    """

    def __init__(self, set_progress: Callable[[float], None], is_cancelled: Callable[[], bool],
                 on_message: Callable[[str], None] | None = None,
                 on_log: Callable[[str], None] | None = None) -> None:
        self._set_progress = set_progress
        self._is_cancelled = is_cancelled
        self._on_message = on_message
        self._on_log = on_log
        self._lock = threading.Lock()
        self.last_message = ""
        self.log_lines: list[str] = []

    def report(self, fraction: float, message: str = "") -> None:
        self._set_progress(100.0 * max(0.0, min(1.0, fraction)))
        if message and message != self.last_message:
            with self._lock:
                self.last_message = message
            if self._on_message:
                self._on_message(message)

    def cancelled(self) -> bool:
        return self._is_cancelled()

    def log(self, message: str) -> None:
        with self._lock:
            self.log_lines.append(message)
        if self._on_log:
            self._on_log(message)
