"""Job configs and the CLI built from them (no torch needed; generated values only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.config import DetectConfig, FetchConfig, PipelineConfig, TrainConfig
from trainer.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def fetch(**kw):
    base = dict(bbox=(32.59, 0.35, 32.60, 0.36), zoom=19, imagery="file:///t/{z}/{x}/{y}.png", out="/tmp/x")
    base.update(kw)
    return FetchConfig(**base)


@pytest.mark.parametrize("bbox, fragment", [
    ((3, 2, 1, 4), "inverted"),
    ((1, 4, 3, 2), "inverted"),
    ((1, 2, 200, 4), "longitudes"),
    ((1, -89, 3, 4), "latitudes"),
    ((1, 2, 3), "four finite numbers"),
])
def test_bad_bbox_is_refused_with_the_fix(bbox, fragment):
    with pytest.raises(InputError, match=fragment):
        fetch(bbox=bbox)


def test_zoom_and_counts_are_range_checked():
    with pytest.raises(InputError, match="zoom must be an integer from 0 to 24"):
        fetch(zoom=25)
    with pytest.raises(InputError, match="workers"):
        fetch(workers=0)
    with pytest.raises(InputError, match="overwrite or resume"):
        fetch(overwrite=True, resume=True)


def test_json_round_trip_coerces_types():
    cfg = fetch(cache_dir="/tmp/c")
    again = FetchConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert isinstance(again.out, Path) and isinstance(again.bbox, tuple)
    with pytest.raises(InputError, match="unknown FetchConfig option"):
        FetchConfig.from_dict({**cfg.to_dict(), "zoomm": 3})


def test_detect_and_train_validation():
    with pytest.raises(InputError, match="overlap"):
        DetectConfig(model="m.onnx", imagery="x.tif", out="o", overlap=0.9)
    with pytest.raises(InputError, match="1-based"):
        DetectConfig(model="m.onnx", imagery="x.tif", out="o", bands=(0, 1, 2))
    assert DetectConfig(model="m", imagery="x", out="o", bands="3,2,1").bands == (3, 2, 1)
    with pytest.raises(InputError, match="at least 10%"):
        TrainConfig(data="d", out="o", val_fraction=0.5, test_fraction=0.45)


def test_pipeline_derives_step_configs_and_validates_early():
    cfg = PipelineConfig(out="/tmp/p", imagery="file:///t/{z}/{x}/{y}.png", labels="l.geojson",
                         bbox=(32.59, 0.35, 32.60, 0.36), zoom=20, epochs=3)
    assert cfg.fetch_config.out == Path("/tmp/p/dataset")
    assert cfg.train_config.data == cfg.fetch_config.out and cfg.train_config.epochs == 3
    assert cfg.detect_config.model == "/tmp/p/run"
    with pytest.raises(InputError):
        PipelineConfig(out="/tmp/p", zoom=40)


def _camp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_cli_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys; from trainer.cli import build_parser; build_parser(); "
            "import trainer.jobs, trainer.runner; "
            "heavy = [m for m in ('torch', 'lightning', 'mlflow', 'onnxruntime', 'rasterio') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
    for args in (["--help"], ["fetch", "--help"], ["detect", "--help"], ["run", "--help"]):
        result = _camp(*args)
        assert result.returncode == 0, result.stderr
        assert "usage: camp" in result.stdout


def test_cli_bad_input_exits_nonzero_with_message(tmp_path):
    result = _camp("fetch", "--bbox", "3,2,1,4", "--zoom", "19", "--imagery", "x", "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "inverted" in result.stderr and "--bbox 1,2,3,4" in result.stderr
    assert not (tmp_path / "o").exists()
    # Negative longitudes need no '=' (argparse would otherwise read them as options).
    result = _camp("fetch", "--bbox", "-1.5,2,-1,3", "--zoom", "40", "--imagery", "x", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "zoom must be" in result.stderr


def test_json_job_reports_errors_as_events():
    proc = subprocess.run([sys.executable, "-m", "trainer", "job", "fetch"], input=json.dumps({"zoom": 3}),
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode != 0
    assert events[-1]["event"] == "error"
