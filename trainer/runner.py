"""Run a job in another Python interpreter and stream its progress back.

QGIS's and ArcGIS Pro's interpreters rarely have torch, and a CUDA crash must not take the
desktop application down. The front end starts ``PYTHON -m trainer job KIND`` with the config as
JSON on stdin; the job writes JSON lines (see :class:`trainer.progress.JsonLinesProgress`) on
stdout. Cancel interrupts the whole process tree; the core turns that into :class:`Cancelled`
and leaves only complete outputs. Standard library only: this module is imported inside QGIS and
ArcGIS.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import errors

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class JobOutcome:
    """What an out-of-process job ended with."""

    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error_type: str = ""
    message: str = ""
    cancelled: bool = False
    returncode: int | None = None
    log: list[str] = field(default_factory=list)

    def raise_for_error(self) -> dict[str, Any]:
        """Return the result, or raise the core's exception class with the job's message."""
        if self.ok:
            return self.result
        if self.cancelled:
            raise errors.Cancelled(self.message or "cancelled")
        cls = getattr(errors, self.error_type, None)
        if not (isinstance(cls, type) and issubclass(cls, errors.CampError)):
            cls = errors.CampError
        tail = "\n".join(self.log[-20:])
        raise cls(self.message or f"job failed (exit code {self.returncode})\n{tail}")


def run_job_subprocess(
    kind: str,
    config: dict[str, Any],
    python: str | None = None,
    on_progress: Callable[[float, str], None] | None = None,
    on_log: Callable[[str], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    env: dict[str, str] | None = None,
) -> JobOutcome:
    """Run ``python -m trainer job KIND`` and stream its events; blocks until it ends.

    ``is_cancelled`` is polled while the job runs; when it turns true the job's process group is
    interrupted (SIGINT, then SIGKILL after 20 s).
    """
    python = python or sys.executable
    child_env = dict(os.environ if env is None else env)
    # Make the core importable even when it is bundled in the plugin rather than pip-installed.
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), child_env.get("PYTHONPATH", "")]))
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    popen_kwargs: dict[str, Any] = {}
    if os.name == "nt":
        popen_kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
    else:
        popen_kwargs["start_new_session"] = True
    proc = subprocess.Popen(
        [python, "-m", "trainer", "job", kind],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, encoding="utf-8", errors="replace", env=child_env, **popen_kwargs,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(config))
    proc.stdin.close()

    outcome = JobOutcome(ok=False)
    stop_watch = threading.Event()

    def watch_cancel() -> None:
        while not stop_watch.wait(0.2):
            if is_cancelled and is_cancelled():
                outcome.cancelled = True
                _interrupt(proc)
                return

    watcher = threading.Thread(target=watch_cancel, daemon=True)
    watcher.start()
    for line in proc.stdout:
        event = _parse_event(line)
        if event is None:
            outcome.log.append(line.rstrip())
            if on_log:
                on_log(line.rstrip())
            continue
        kind_ = event.get("event")
        if kind_ == "progress" and on_progress:
            on_progress(float(event.get("fraction", 0.0)), str(event.get("message", "")))
        elif kind_ == "log":
            outcome.log.append(str(event.get("message", "")))
            if on_log:
                on_log(str(event.get("message", "")))
        elif kind_ == "result":
            outcome.ok = True
            outcome.result = event.get("result", {})
        elif kind_ == "error":
            outcome.error_type = str(event.get("type", "CampError"))
            outcome.message = str(event.get("message", ""))
            outcome.cancelled = outcome.cancelled or outcome.error_type == "Cancelled"
    outcome.returncode = proc.wait()
    stop_watch.set()
    if outcome.returncode != 0:
        outcome.ok = False
        if not outcome.message and not outcome.cancelled:
            outcome.message = f"job exited with code {outcome.returncode}: " + " | ".join(outcome.log[-5:])
    return outcome


def _parse_event(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def _interrupt(proc: subprocess.Popen[str]) -> None:
    try:
        if os.name == "nt":
            proc.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
        else:
            os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=20)
    except (subprocess.TimeoutExpired, ProcessLookupError, OSError):
        try:
            if os.name == "nt":
                proc.kill()
            else:
                os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, OSError):
            pass
