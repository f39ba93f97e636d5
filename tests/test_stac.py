"""The STAC-MLM item of the trained Kampala run: valid offline, truthful, and strict when broken."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.errors import InputError
from trainer.export.stac import EXTENSIONS, cached_schema_path, validate_item
from trainer.modelcard import ModelCard

pytestmark = pytest.mark.sample_data

ROOT = Path(__file__).resolve().parents[1]
MODEL_FILES = {"best_model.pt": "torch.jit.save", "best_model.onnx": "onnx", "best_model.pth": "torch.save",
               "best_model.dlpk": "esri.dlpk"}


@pytest.fixture(scope="module")
def item(trained_run: Path) -> dict:
    return json.loads((trained_run / "stac_item.json").read_text())


@pytest.fixture(scope="module")
def card(trained_run: Path) -> ModelCard:
    return ModelCard.read(trained_run)


def test_trained_item_is_valid_offline(trained_run: Path, schema_dir: Path, item: dict) -> None:
    assert validate_item(trained_run / "stac_item.json", schema_dir) == []
    assert item["stac_version"] == "1.1.0"
    assert set(EXTENSIONS) == set(item["stac_extensions"])
    assert "https://stac-extensions.github.io/mlm/v1.5.0/schema.json" in item["stac_extensions"]


def test_geometry_is_the_training_extent(item: dict, card: ModelCard, kampala) -> None:
    from shapely.geometry import box, shape

    assert item["bbox"] == pytest.approx(list(card.bbox))
    assert shape(item["geometry"]).equals(box(*card.bbox))
    west, south, east, north = kampala.bbox
    pad = 1e-4  # the chip grid snaps to whole tiles around the requested extent
    assert west - pad <= item["bbox"][0] < item["bbox"][2] <= east + pad
    assert south - pad <= item["bbox"][1] < item["bbox"][3] <= north + pad


def test_assets_are_relative_with_matching_sizes_and_checksums(trained_run: Path, item: dict) -> None:
    hrefs = {a["href"] for a in item["assets"].values()}
    assert {f"./{name}" for name in MODEL_FILES} | {"./model_card.json"} <= hrefs
    for key, asset in item["assets"].items():
        assert asset["href"].startswith("./"), key
        path = (trained_run / asset["href"]).resolve()
        data = path.read_bytes()
        assert asset["file:size"] == len(data)
        assert asset["file:checksum"] == "1220" + hashlib.sha256(data).hexdigest()


def test_exactly_the_model_files_are_mlm_models(item: dict) -> None:
    for key, asset in item["assets"].items():
        name = asset["href"][2:]
        if name in MODEL_FILES:
            assert "mlm:model" in asset["roles"] and asset["mlm:artifact_type"] == MODEL_FILES[name], key
            assert [b["name"] for b in asset["bands"]] == ["red", "green", "blue"]
        else:
            assert "mlm:model" not in asset["roles"] and "mlm:artifact_type" not in asset, key


def test_model_properties_are_truthful(item: dict, card: ModelCard) -> None:
    from trainer.model import build_model

    props = item["properties"]
    assert props["mlm:pretrained"] is False and props["mlm:framework"] == "pytorch"
    assert props["mlm:architecture"] == "U-Net" and props["mlm:tasks"] == ["semantic-segmentation"]
    assert props["mlm:accelerator"] in ("amd64", "cuda")  # never "cpu": MLM v1.5 rejects it
    assert props["mlm:total_parameters"] == sum(p.numel() for p in build_model(card.architecture).parameters())
    assert props["mlm:hyperparameters"]["base_channels"] == card.architecture["base_channels"]
    assert props["camp:test_metrics"] == card.metrics
    [model_input] = props["mlm:input"]
    assert model_input["input"]["shape"] == [-1, 3, card.tile_size, card.tile_size]
    assert "bands" in model_input["input"]["dim_order"] and model_input["bands"] == list(card.bands)
    assert [b["name"] for b in props["bands"]] == list(card.bands)
    # z-score on 0-255 pixels == /255 then the card's 0-1 mean/std
    for scaling, mean, std in zip(model_input["value_scaling"], card.mean, card.std, strict=True):
        assert scaling["type"] == "z-score"
        assert scaling["mean"] / 255 == pytest.approx(mean) and scaling["stddev"] / 255 == pytest.approx(std)
    [output] = props["mlm:output"]
    classes = {c["value"]: c for c in output["classification:classes"]}
    assert classes[1]["name"] == "camp structure" and classes[1]["description"] and classes[0]["description"]
    assert classes[1]["color_hint"] == "{:02X}{:02X}{:02X}".format(*card.positive_class.color)
    assert props["gsd"] == pytest.approx(card.resolution_m)


@pytest.mark.parametrize("breakage,message", [
    (lambda i: i["properties"].__setitem__("mlm:accelerator", "cpu"), "mlm:accelerator: 'cpu' is not one of"),
    (lambda i: i["properties"].pop("mlm:input"), "'mlm:input' is a required property"),
    (lambda i: i["assets"]["model-onnx"].pop("mlm:artifact_type"), "mlm:artifact_type"),
    (lambda i: i["assets"]["model-card"].__setitem__("mlm:artifact_type", "json"), "model-card"),
    (lambda i: i["properties"].pop("bands"), "bands"),
    (lambda i: i["properties"]["mlm:output"][0]["classification:classes"][1].pop("description"),
     "'description' is a required property"),
    (lambda i: i["assets"]["model-torchscript"].__setitem__("file:checksum", "not-hex"), "file:checksum"),
    (lambda i: i.__setitem__("bbox", [0, 0, 1]), "bbox"),
])
def test_broken_items_fail_validation(item: dict, schema_dir: Path, breakage, message: str) -> None:
    broken = copy.deepcopy(item)
    breakage(broken)
    errors = validate_item(broken, schema_dir)
    assert errors and any(message in e for e in errors), errors


def test_absolute_hrefs_and_changed_files_are_flagged(trained_run: Path, tmp_path: Path, schema_dir: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    item = json.loads((run / "stac_item.json").read_text())
    item["assets"]["model-onnx"]["href"] = str(run / "best_model.onnx")
    (run / "stac_item.json").write_text(json.dumps(item))
    with open(run / "best_model.pth", "ab") as handle:
        handle.write(b"tampered")
    errors = validate_item(run / "stac_item.json", schema_dir)
    assert any("'model-onnx'" in e and "absolute local path" in e for e in errors), errors
    assert any("'model-weights'" in e and "checksum does not match" in e for e in errors), errors
    (run / "best_model.pt").unlink()
    assert any("does not exist" in e for e in validate_item(run / "stac_item.json", schema_dir))


def test_schemas_come_from_the_cache_when_offline(trained_run: Path, schema_dir: Path, tmp_path: Path,
                                                  monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # A proxy on a closed loopback port: any real fetch fails at once, as on an offline laptop.
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(InputError, match="pass --schema-dir"):
        validate_item(trained_run / "stac_item.json", None)
    index = json.loads((schema_dir / "index.json").read_text())
    for url, name in index.items():
        cached = cached_schema_path(url)
        assert str(cached).startswith(str(tmp_path / "home" / ".cache" / "camp" / "schemas"))
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(schema_dir / name, cached)
    assert validate_item(trained_run / "stac_item.json", None) == []


def _camp(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def test_camp_validate_stac_exit_codes(trained_run: Path, schema_dir: Path, item: dict, tmp_path: Path) -> None:
    ok = _camp("validate-stac", str(trained_run / "stac_item.json"), "--schema-dir", str(schema_dir))
    assert ok.returncode == 0 and ok.stdout.strip() == "valid", ok.stderr
    broken = copy.deepcopy(item)
    broken["properties"]["mlm:accelerator"] = "cpu"
    path = tmp_path / "stac_item.json"
    path.write_text(json.dumps(broken))
    bad = _camp("validate-stac", str(path), "--schema-dir", str(schema_dir))
    assert bad.returncode == 1 and "mlm:accelerator" in bad.stdout and "valid\n" not in bad.stdout
    missing = _camp("validate-stac", str(tmp_path / "nope.json"), "--schema-dir", str(schema_dir))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
