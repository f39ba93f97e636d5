"""Out-of-process jobs (trainer.runner): how the QGIS task and the ArcGIS tools run the core.

Real subprocesses (`python -m trainer job KIND`), real JSON-lines events, real signals.
"""

from __future__ import annotations

import json
import threading

import pytest

from trainer.errors import Cancelled, InputError
from trainer.runner import run_job_subprocess


def test_fetch_runs_out_of_process_with_progress(kampala, tmp_path):
    fractions: list[float] = []
    config = {"bbox": list(kampala.bbox), "zoom": kampala.zoom, "imagery": kampala.file_template,
              "labels": str(kampala.labels), "out": str(tmp_path / "ds"), "cache_dir": str(tmp_path / "c")}
    outcome = run_job_subprocess("fetch", config, on_progress=lambda f, m: fractions.append(f))
    result = outcome.raise_for_error()
    assert result["chips"] == len(kampala.tiles) == 96
    assert result["labelled_chips"] > 0
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert len(manifest["chips"]) == 96
    assert fractions and fractions == sorted(fractions) and fractions[-1] > 0.9


def test_job_errors_come_back_as_the_core_exception(tmp_path):
    outcome = run_job_subprocess("fetch", {"bbox": [3, 2, 1, 4], "zoom": 5, "imagery": "x", "out": str(tmp_path)})
    assert not outcome.ok and outcome.error_type == "InputError"
    with pytest.raises(InputError, match="inverted"):
        outcome.raise_for_error()


def test_cancel_interrupts_the_job_and_leaves_no_complete_looking_output(kampala, tile_server, tmp_path):
    tile_server.faults.delay_seconds = 0.3  # slow enough to cancel mid-fetch
    started = threading.Event()
    config = {"bbox": list(kampala.bbox), "zoom": kampala.zoom, "imagery": tile_server.template,
              "labels": "none", "out": str(tmp_path / "ds"), "workers": 2, "cache_dir": str(tmp_path / "c")}

    def on_progress(fraction: float, message: str) -> None:
        if fraction > 0.06:
            started.set()

    outcome = run_job_subprocess("fetch", config, on_progress=on_progress, is_cancelled=started.is_set)
    assert outcome.cancelled and not outcome.ok
    with pytest.raises(Cancelled):
        outcome.raise_for_error()
    assert not (tmp_path / "ds" / "manifest.json").exists()
    assert tile_server.tile_requests < len(kampala.tiles)
