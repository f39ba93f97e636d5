"""Run a core job from a tool's execute: progress bar, messages and Cancel wired to ArcGIS.

Both ways of running end in the same three callbacks (progress, log line, is-cancelled), which
only the geoprocessing thread handles, because arcpy's progressor and messages belong to it:

- in process, the job runs on a worker thread and sends its events through a queue that this
  thread drains;
- out of process, :func:`trainer.runner.run_job_subprocess` reads the job's JSON lines on this
  thread.

Cancel: ArcGIS stops a tool "after the current line" unless ``arcpy.env.autoCancelling`` is False,
which would orphan a child process and leave half-written outputs. During a job it is False and
``arcpy.env.isCancelled`` is polled instead; the core then stops between units of work and keeps
only complete outputs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from .settings import Plan, plan_execution

OnProgress = Callable[[float, str], None]
OnLog = Callable[[str], None]
IsCancelled = Callable[[], bool]


class ArcpyProgress:
    """Shows core progress in the tool's progressor and log lines as tool messages."""

    def __init__(self, arcpy: Any, messages: Any, title: str) -> None:
        self._arcpy = arcpy
        self._messages = messages
        self._position = -1
        self._label = title
        arcpy.SetProgressor("step", title, 0, 100, 1)

    def progress(self, fraction: float, message: str) -> None:
        position = int(round(max(0.0, min(1.0, fraction)) * 100))
        if message and message != self._label:
            self._label = message
            self._arcpy.SetProgressorLabel(message)
        if position != self._position:  # the core may report many times per percent
            self._position = position
            self._arcpy.SetProgressorPosition(position)

    def log(self, line: str) -> None:
        if line.strip():
            self._messages.addMessage(line)

    def cancelled(self) -> bool:
        return bool(self._arcpy.env.isCancelled)


def run_tool_job(kind: str, config: Any, messages: Any, plan: Plan | None = None) -> dict[str, Any]:
    """Run job ``kind`` with ``config`` (a trainer.config dataclass); return its result as a dict.

    Raises the core's :class:`~trainer.errors.CampError` (``Cancelled`` on cancel) on failure.
    """
    import arcpy

    plan = plan or plan_execution()
    messages.addMessage(f"camp {kind}: running {plan.describe()}")
    ui = ArcpyProgress(arcpy, messages, f"camp {kind}")
    auto_cancelling = arcpy.env.autoCancelling
    arcpy.env.autoCancelling = False
    try:
        if plan.in_process:
            return run_in_process(kind, config, ui.progress, ui.log, ui.cancelled)
        from trainer.runner import run_job_subprocess

        outcome = run_job_subprocess(kind, config.to_dict(), python=plan.python, on_progress=ui.progress,
                                     on_log=ui.log, is_cancelled=ui.cancelled)
        return outcome.raise_for_error()
    finally:
        arcpy.env.autoCancelling = auto_cancelling
        arcpy.ResetProgressor()


def run_in_process(kind: str, config: Any, on_progress: OnProgress, on_log: OnLog,
                   is_cancelled: IsCancelled) -> dict[str, Any]:
    """``trainer.jobs.run_job`` on a worker thread; its events are handled on the calling thread."""
    from trainer.jobs import run_job
    from trainer.progress import NullProgress

    events: queue.Queue[tuple[str, Any]] = queue.Queue()

    class QueueProgress(NullProgress):
        def report(self, fraction: float, message: str = "") -> None:
            events.put(("progress", (fraction, message)))

        def log(self, message: str) -> None:
            events.put(("log", message))

    progress = QueueProgress()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = run_job(kind, config, progress).to_dict()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread below
            outcome["error"] = exc
        finally:
            events.put(("done", None))

    threading.Thread(target=work, name=f"camp-{kind}", daemon=True).start()
    while True:
        try:
            event, payload = events.get(timeout=0.2)
        except queue.Empty:
            event, payload = "", None
        if event == "progress":
            on_progress(*payload)
        elif event == "log":
            on_log(payload)
        elif event == "done":
            break
        if is_cancelled() and not progress.cancelled():
            progress.cancel()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
