"""The main job, `camp run` (fetch -> train -> export -> detect -> evaluate), through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio

from trainer.tiling import Tile

ROOT = Path(__file__).resolve().parents[1]


def _camp(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def test_offline_main_job_fails_fast_with_the_offline_form(tmp_path):
    # Port 9 (discard) on loopback refuses connections: what a machine without internet sees.
    result = _camp("run", "--imagery", "http://127.0.0.1:9/{z}/{x}/{y}.png", "--out", str(tmp_path / "p"),
                   timeout=120)
    assert result.returncode != 0
    assert "cannot reach the tile server" in result.stderr
    assert "file:///path/to/tiles/{z}/{x}/{y}.png" in result.stderr and "--labels" in result.stderr
    assert not (tmp_path / "p" / "dataset").exists()


@pytest.mark.slow
def test_camp_run_on_real_imagery_end_to_end(kampala, tmp_path):
    # A 6 x 6 tile corner of the Kampala block: 36 real chips, 4 spatial blocks.
    first = kampala.tiles[0]
    nw = Tile(first.x, first.y, first.z).bounds_lonlat
    se = Tile(first.x + 5, first.y + 5, first.z).bounds_lonlat
    bbox = f"{nw[0] + 1e-7},{se[1] + 1e-7},{se[2] - 1e-7},{nw[3] - 1e-7}"
    out = tmp_path / "project"
    result = _camp("run", "--imagery", kampala.file_template, "--labels", str(kampala.labels),
                   "--bbox", bbox, "--zoom", str(kampala.zoom), "--epochs", "2", "--base-channels", "8",
                   "--accelerator", "cpu", "--out", str(out), "--json",
                   "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    steps = report["steps"]
    assert steps["fetch"]["chips"] == 36
    for name in ("best_model.pth", "best_model.pt", "best_model.onnx", "best_model.dlpk", "stac_item.json"):
        assert (out / "run" / name).stat().st_size > 0
    with rasterio.open(out / "detect" / "probability.tif") as src:
        assert src.crs.to_epsg() == 3857
        left, bottom, right, top = src.bounds
        assert left == pytest.approx(Tile(first.x, first.y, first.z).bounds_3857[0], abs=0.5)
        assert top == pytest.approx(Tile(first.x, first.y, first.z).bounds_3857[3], abs=0.5)
        assert src.overviews(1)
    evaluation = json.loads((out / "detect" / "evaluation.json").read_text())
    assert evaluation == steps["evaluate"]["report"] or "pixel" in evaluation
    assert 0.0 <= evaluation["pixel"]["iou"] <= 1.0
