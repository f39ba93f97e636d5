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
