"""load_predictor: every model file kind, the card it carries, ONNX vs torch, and bad files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_detect_support import STANDIN_TILE, standin_module, write_standin_run

from trainer.errors import CampError, ModelLoadError
from trainer.predictor import load_predictor


@pytest.fixture(scope="module")
def standin_run(tmp_path_factory) -> Path:
    return write_standin_run(tmp_path_factory.mktemp("standin") / "run")


def _batch(seed: int = 0, n: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, STANDIN_TILE, STANDIN_TILE), dtype=np.uint8)


def _reference(batch: np.ndarray) -> np.ndarray:
    """The stand-in run directly in torch, normalised by hand with the card's mean/std."""
    import torch

    x = (batch.astype(np.float32) / 255.0 - 0.45) / 0.25
    with torch.no_grad():
        return standin_module()(torch.from_numpy(x)).numpy()[:, 0]


@pytest.mark.parametrize("name,backend", [
    ("", "onnx"), ("", "torch"), ("best_model.onnx", "onnx"), ("best_model.pt", "torch"),
    ("best_model.dlpk", "torch"),
])
def test_every_model_file_predicts_the_same(standin_run: Path, name: str, backend: str) -> None:
    predictor = load_predictor(standin_run / name if name else standin_run,
                               backend="auto" if name else backend)
    assert predictor.backend == backend
    assert predictor.card.tile_size == STANDIN_TILE and predictor.card.name == "colour stand-in"
    batch = _batch()
    probs = predictor.predict(batch)
    assert probs.shape == (3, STANDIN_TILE, STANDIN_TILE) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, _reference(batch), atol=1e-5)
    assert 0.0 <= probs.min() and probs.max() <= 1.0 and probs.std() > 0.01


def test_run_folder_prefers_onnx_then_torchscript(standin_run: Path, tmp_path: Path) -> None:
    assert load_predictor(standin_run).backend == "onnx"
    partial = tmp_path / "run"
    partial.mkdir()
    (partial / "best_model.pt").write_bytes((standin_run / "best_model.pt").read_bytes())
    predictor = load_predictor(partial)
    assert predictor.backend == "torch" and predictor.source.name == "best_model.pt"


def test_dlpk_is_unpacked_once_into_the_cache(standin_run: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CAMP_CACHE_DIR", str(tmp_path / "cache"))
    load_predictor(standin_run / "best_model.dlpk")
    unpacked = list((tmp_path / "cache" / "dlpk").rglob("*.pt"))
    assert len(unpacked) == 1
    stamp = unpacked[0].stat().st_mtime_ns
    load_predictor(standin_run / "best_model.dlpk")
    assert unpacked[0].stat().st_mtime_ns == stamp


def test_not_a_model(tmp_path: Path) -> None:
    for name, data in [("junk.onnx", b"not a protobuf at all"), ("junk.pt", b"\x00\x01garbage"),
                       ("junk.dlpk", b"PK but not really")]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ModelLoadError, match="not a model: .*" + name):
            load_predictor(path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_predictor(tmp_path / "missing.onnx")
    with pytest.raises(ModelLoadError, match="no model in"):
        load_predictor(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="unknown extension"):
        load_predictor(tmp_path / "weights.bin")


def test_model_without_card_asks_for_re_export(standin_run: Path, tmp_path: Path) -> None:
    import onnx
    import torch

    proto = onnx.load(str(standin_run / "best_model.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    torch.jit.save(torch.jit.trace(standin_module(), torch.zeros(1, 3, 8, 8)), str(tmp_path / "bare.pt"))
    with zipfile.ZipFile(tmp_path / "bare.dlpk", "w") as z:
        z.write(standin_run / "best_model.pt", "best_model.pt")
    for name in ("bare.onnx", "bare.pt", "bare.dlpk"):
        with pytest.raises(ModelLoadError, match=r"no model card in .*re-export it with `camp package"):
            load_predictor(tmp_path / name)


def test_backend_must_match_the_file(standin_run: Path) -> None:
    with pytest.raises(CampError, match="is an ONNX model"):
        load_predictor(standin_run / "best_model.onnx", backend="torch")
    with pytest.raises(CampError, match="is a torch model"):
        load_predictor(standin_run / "best_model.pt", backend="onnx")


def test_wrong_batch_shape_is_refused(standin_run: Path) -> None:
    predictor = load_predictor(standin_run)
    with pytest.raises(CampError, match=r"\[B, 3, T, T\]"):
        predictor.predict(np.zeros((1, 4, STANDIN_TILE, STANDIN_TILE), dtype=np.uint8))
