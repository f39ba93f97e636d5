"""One progress/cancel protocol for the core, with small adapters per front end.

The core calls ``progress.report(fraction, message)`` and checks ``progress.cancelled()`` between
units of work (a tile, a batch, an epoch). Front ends adapt it: a tqdm bar for the CLI, JSON lines
on stdout for out-of-process jobs (read by the QGIS task and the ArcGIS tool), ``QgsFeedback`` and
``arcpy.SetProgressor*`` in the plugins.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, field
from typing import IO, Any, Protocol, runtime_checkable

from .errors import Cancelled


@runtime_checkable
class Progress(Protocol):
    def report(self, fraction: float, message: str = "") -> None:
        """fraction in [0, 1] of the whole job; message is shown to the user."""

    def cancelled(self) -> bool:
        """True once the user asked to stop."""

    def log(self, message: str) -> None:
        """A line for the log (not a progress update)."""


class NullProgress:
    """Reports nowhere; cancellable through ``cancel()`` (used by tests and in-process callers)."""

    def __init__(self) -> None:
        self._cancel = threading.Event()

    def report(self, fraction: float, message: str = "") -> None:
        pass

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def log(self, message: str) -> None:
        pass


class RecordingProgress(NullProgress):
    """Keeps every report, for tests and for front ends that poll."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[float, str]] = []
        self.lines: list[str] = []

    def report(self, fraction: float, message: str = "") -> None:
        self.events.append((fraction, message))

    def log(self, message: str) -> None:
        self.lines.append(message)


class TqdmProgress(NullProgress):
    """A progress bar on stderr for the CLI."""

    def __init__(self, description: str = "camp") -> None:
        super().__init__()
        from tqdm import tqdm

        self._name = description
        self._bar = tqdm(total=1000, desc=description, unit="‰", file=sys.stderr,
                         bar_format="{percentage:3.0f}%|{bar}| {elapsed} {desc}")

    def report(self, fraction: float, message: str = "") -> None:
        target = int(max(0.0, min(1.0, fraction)) * 1000)
        if target > self._bar.n:
            self._bar.update(target - self._bar.n)
        if message:
            self._bar.set_description_str(f"{self._name}: {message[:70]}", refresh=True)

    def log(self, message: str) -> None:
        self._bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self._bar.close()


class JsonLinesProgress(NullProgress):
    """Machine-readable events, one JSON object per line, for out-of-process jobs.

    Events: {"event": "progress", "fraction": f, "message": m}, {"event": "log", "message": m},
    and (written by the job runner) {"event": "result", ...} or {"event": "error", ...}.
    Cancel arrives as SIGINT/SIGTERM from the parent, which the runner turns into ``cancel()``.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()

    def emit(self, event: str, **payload: Any) -> None:
        line = json.dumps({"event": event, **payload}, default=str)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def report(self, fraction: float, message: str = "") -> None:
        self.emit("progress", fraction=round(float(fraction), 4), message=message)

    def log(self, message: str) -> None:
        self.emit("log", message=message)


@dataclass
class SubProgress:
    """Maps [0, 1] of a step onto [start, end] of the parent job (multi-step jobs)."""

    parent: Progress
    start: float
    end: float
    prefix: str = ""
    _last: float = field(default=0.0, repr=False)

    def report(self, fraction: float, message: str = "") -> None:
        fraction = max(0.0, min(1.0, fraction))
        self._last = fraction
        text = f"{self.prefix}{message}" if self.prefix and message else (message or self.prefix)
        self.parent.report(self.start + (self.end - self.start) * fraction, text)

    def cancelled(self) -> bool:
        return self.parent.cancelled()

    def log(self, message: str) -> None:
        self.parent.log(message)


def check_cancelled(progress: Progress) -> None:
    """Raise :class:`Cancelled` if the user asked to stop."""
    if progress.cancelled():
        raise Cancelled("cancelled by the user; completed outputs were kept, run again to resume")
