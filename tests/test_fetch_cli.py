"""`camp fetch` as a user runs it: exit codes and messages for bad input, and a light `--help`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def camp(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize(("args", "message"), [
    (["--bbox=32.6,0.35,32.5,0.36", "--zoom", "19"], "is inverted or empty"),
    (["--bbox=32.5,0.35,32.6,0.36", "--zoom", "30"], "zoom must be an integer from 0 to 24"),
    (["--bbox=-10,-10,10,10", "--zoom", "19"], "needs 852809584 tiles .*cap of 5000; .*--max-tiles"),
])
def test_bad_extent_exit_codes(tmp_path, args, message):
    proc = camp("fetch", *args, "--imagery", "http://127.0.0.1:9/{z}/{x}/{y}.png", "--labels", "none",
                "--out", str(tmp_path / "ds"))
    assert proc.returncode == 2
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("camp fetch: error:") and re.search(message, error), proc.stderr
    assert not (tmp_path / "ds").exists()


@pytest.mark.sample_data
def test_unreachable_server_and_missing_labels(kampala, tmp_path):
    bbox = ",".join(map(str, kampala.bbox))
    proc = camp("fetch", f"--bbox={bbox}", "--zoom", "21", "--imagery", "http://127.0.0.1:9/{z}/{x}/{y}.png",
                "--labels", "none", "--out", str(tmp_path / "ds"))
    assert proc.returncode == 2
    assert "cannot reach the tile server" in proc.stderr
    assert "--imagery 'file:///path/to/tiles/{z}/{x}/{y}.png' --labels labels.geojson" in proc.stderr
    proc = camp("fetch", f"--bbox={bbox}", "--zoom", "21", "--imagery", kampala.file_template,
                "--labels", str(tmp_path / "nope.gpkg"), "--out", str(tmp_path / "ds"))
    assert proc.returncode == 2 and "nope.gpkg does not exist" in proc.stderr
    assert not (tmp_path / "ds").exists()


@pytest.mark.sample_data
def test_fetch_json_output_and_refusal(kampala, tmp_path):
    x0, y0 = min(t.x for t in kampala.tiles), min(t.y for t in kampala.tiles)
    from trainer.tiling import Tile

    west, south, east, north = Tile(x0, y0, 21).bounds_lonlat
    bbox = f"{west + 1e-7},{south + 1e-7},{east - 1e-7},{north - 1e-7}"
    args = ["fetch", f"--bbox={bbox}", "--zoom", "21", "--imagery", kampala.file_template,
            "--labels", str(kampala.labels), "--out", str(tmp_path / "ds"), "--json"]
    proc = camp(*args)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["chips"] == 1
    proc = camp(*args)
    assert proc.returncode == 2 and "already holds a complete dataset" in proc.stderr


@pytest.mark.parametrize("args", [["--help"], ["fetch", "--help"]])
def test_help_does_not_import_torch(args):
    code = (f"import sys, runpy; sys.argv = ['camp', *{args!r}]\n"
            "try:\n    runpy.run_module('trainer', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'lightning', 'mlflow', 'onnxruntime', 'rasterio') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr
    assert "--imagery" in proc.stdout or "fetch" in proc.stdout


@pytest.mark.sample_data
def test_interrupt_out_of_process_then_resume(kampala, tile_server, tmp_path):
    """Cancel as QGIS/ArcGIS do (SIGINT to the job's process group), then complete with resume."""
    import rasterio

    from trainer.config import FetchConfig
    from trainer.fetch import run_fetch
    from trainer.progress import NullProgress
    from trainer.runner import run_job_subprocess
    from trainer.tiling import Tile

    tile_server.faults.delay_seconds = 0.3  # one tile at a time, ~4 s for 12: time to interrupt
    x0, y0 = min(t.x for t in kampala.tiles), min(t.y for t in kampala.tiles)
    west, _, _, north = Tile(x0, y0, 21).bounds_lonlat
    _, south, east, _ = Tile(x0 + 3, y0 + 2, 21).bounds_lonlat
    out = tmp_path / "ds"
    config = FetchConfig(bbox=(west + 1e-7, south + 1e-7, east - 1e-7, north - 1e-7), zoom=kampala.zoom,
                         imagery=tile_server.template, out=out, labels=str(kampala.labels), workers=1,
                         cache_dir=tmp_path / "cache")
    outcome = run_job_subprocess("fetch", config.to_dict(),
                                 is_cancelled=lambda: len(list((out / "chips").glob("*.tif"))) >= 2)
    assert outcome.cancelled and outcome.returncode == 130 and not outcome.ok
    chips = sorted((out / "chips").glob("*.tif"))
    assert 2 <= len(chips) < 12 and not (out / "manifest.json").exists()
    for path in chips:
        with rasterio.open(path) as src:
            assert src.read().shape == (3, 256, 256)
        assert (out / "labels" / path.name).is_file()
    tile_server.faults.delay_seconds = 0
    result = run_fetch(config.replace(resume=True, workers=8), NullProgress())
    assert result.chips == 12 and result.resumed_chips >= len(chips)
