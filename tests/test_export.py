"""Model files of a trained run: pth, TorchScript and ONNX agree; ONNX carries Deepness metadata.

Most tests use the real run trained on the Kampala sample (`trained_run`); the unit tests at the
end use small generated models and say so in their names.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from trainer.config import ExportConfig
from trainer.errors import Cancelled, ModelLoadError
from trainer.export import ExportError, export_formats, run_export
from trainer.export.torch_formats import MAX_TORCH_201_FILE_FORMAT, save_onnx
from trainer.modelcard import ModelCard
from trainer.progress import NullProgress, RecordingProgress

pytestmark = pytest.mark.sample_data

TORCH_201_OPS = {"aten::_convolution", "aten::batch_norm", "aten::cat", "aten::max_pool2d", "aten::relu",
                 "aten::relu_", "aten::sigmoid", "prim::Constant", "prim::GetAttr", "prim::ListConstruct"}
DEEPNESS_KEYS = ("model_type", "class_names", "resolution", "tile_size", "tiles_overlap",
                 "standardization_mean", "standardization_std", "seg_thresh", "seg_small_segment")


def kampala_chips(kampala, count: int, tile: int) -> np.ndarray:
    """Real Kampala tiles as uint8 [count, 3, tile, tile] (RGBA PNG -> RGB)."""
    from PIL import Image

    chips = []
    for t in kampala.tiles[:count]:
        image = Image.open(kampala.tiles_dir / str(t.z) / str(t.x) / f"{t.y}.png").convert("RGB")
        chips.append(np.asarray(image)[:tile, :tile].transpose(2, 0, 1))
    return np.stack(chips)


def normalise(chips: np.ndarray, card: ModelCard) -> np.ndarray:
    mean = np.asarray(card.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(card.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((chips.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


def pth_model(run: Path, card: ModelCard):
    import torch

    from trainer.model import build_model

    model = build_model(card.architecture)
    model.load_state_dict(torch.load(run / "best_model.pth", map_location="cpu", weights_only=True))
    return model.eval()


@pytest.fixture(scope="module")
def card(trained_run: Path) -> ModelCard:
    return ModelCard.read(trained_run)


def test_pth_loads_with_weights_only_into_the_card_architecture(trained_run: Path, card: ModelCard) -> None:
    import torch

    state = torch.load(trained_run / "best_model.pth", map_location="cpu", weights_only=True)
    from trainer.model import build_model

    model = build_model(card.architecture)
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state, strict=True)


def test_torchscript_and_onnx_agree_with_the_pth_model(trained_run: Path, card: ModelCard, kampala) -> None:
    import onnxruntime as ort
    import torch

    x = normalise(kampala_chips(kampala, 3, card.tile_size), card)
    with torch.no_grad():
        expected = pth_model(trained_run, card)(torch.from_numpy(x)).numpy()
        scripted = torch.jit.load(str(trained_run / "best_model.pt"), map_location="cpu")(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(trained_run / "best_model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # the batch axis is dynamic
        got = session.run(["probability"], {"input": x[:batch]})[0]
        assert got.shape == (batch, 1, card.tile_size, card.tile_size)
        np.testing.assert_allclose(got, expected[:batch], atol=1e-5)
    np.testing.assert_allclose(scripted, expected, atol=1e-5)
    # A trained model, not a constant: real chips give a spread of probabilities.
    assert expected.min() >= 0 and expected.max() <= 1 and expected.std() > 0.05


def test_onnx_is_one_file_with_fixed_tile_and_dynamic_batch(trained_run: Path, card: ModelCard) -> None:
    import onnx

    model = onnx.load(str(trained_run / "best_model.onnx"), load_external_data=False)
    assert not list(trained_run.glob("*.onnx.data"))
    assert all(not t.HasField("data_location") or t.data_location == 0 for t in model.graph.initializer)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["probability"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")
    assert [d.dim_value for d in dims[1:]] == [3, 256, 256] == [3, card.tile_size, card.tile_size]
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == 17


def test_onnx_metadata_for_deepness_and_the_model_card(trained_run: Path, card: ModelCard) -> None:
    import onnx

    props = {p.key: p.value for p in onnx.load(str(trained_run / "best_model.onnx")).metadata_props}
    assert set(DEEPNESS_KEYS) <= set(props)
    meta = {key: json.loads(props[key]) for key in DEEPNESS_KEYS}  # every value is JSON-encoded
    assert props["model_type"] == '"Segmentor"'
    assert meta["class_names"] == {"0": "background", "1": "camp structure"}
    assert meta["tile_size"] == card.tile_size == 256
    assert meta["resolution"] == pytest.approx(card.resolution_m * 100, rel=1e-4)
    assert 5 < meta["resolution"] < 10  # zoom 21 at Kampala's latitude is ~7.5 cm/px
    assert meta["standardization_mean"] == pytest.approx(list(card.mean))
    assert meta["standardization_std"] == pytest.approx(list(card.std))
    assert all(0 < m < 1 for m in meta["standardization_mean"])  # 0-1 scale, applied after /255
    assert meta["seg_thresh"] == pytest.approx(card.threshold)
    assert meta["seg_small_segment"] == 0 and 0 <= meta["tiles_overlap"] < 100
    assert ModelCard.from_json(props["camp:model_card"]) == card


def test_torchscript_carries_the_card_and_loads_in_old_torch(trained_run: Path, card: ModelCard) -> None:
    import torch

    extra = {"model_card.json": ""}
    torch.jit.load(str(trained_run / "best_model.pt"), map_location="cpu", _extra_files=extra)
    assert ModelCard.from_json(extra["model_card.json"]) == card
    with zipfile.ZipFile(trained_run / "best_model.pt") as archive:
        version = int(next(archive.read(n) for n in archive.namelist() if n.endswith("/version")))
    # torch 2.0.1 (ArcGIS Pro 3.3-3.5) reads archive format versions up to 10 ...
    assert 1 <= version <= MAX_TORCH_201_FILE_FORMAT
    # ... and knows these ops (all present in TorchScript since torch 1.x, same schemas in 2.0.1).
    module = torch.jit.load(str(trained_run / "best_model.pt"), map_location="cpu")
    ops = {node.kind() for node in module.inlined_graph.nodes()}
    assert ops <= TORCH_201_OPS, f"ops unknown to torch 2.0.1's TorchScript: {ops - TORCH_201_OPS}"
    assert {"aten::_convolution", "aten::cat", "aten::sigmoid"} <= ops


def test_package_rewrites_formats_into_another_folder(trained_run: Path, card: ModelCard, tmp_path: Path) -> None:
    out = tmp_path / "package"
    progress = RecordingProgress()
    result = run_export(ExportConfig(run=trained_run, formats=("onnx", "dlpk", "stac"), out=out), progress)
    # The .dlpk packages the TorchScript, so it is written too.
    assert set(result.files) == {"pt", "onnx", "dlpk", "stac"}
    assert json.loads(json.dumps(result.to_dict()))["folder"] == str(out)
    assert "best_model.dlpk" in result.summary()
    assert any("ONNX parity" in line for line in progress.lines)
    assert progress.events[-1][0] == 1.0
    import onnx

    props = {p.key: p.value for p in onnx.load(str(out / "best_model.onnx")).metadata_props}
    assert ModelCard.from_json(props["camp:model_card"]) == card
    assert ModelCard.read(out) == card
    assert not (out / "best_model.pth").exists()


def test_package_without_weights_names_the_folder(tmp_path: Path, trained_run: Path) -> None:
    shutil.copy(trained_run / "model_card.json", tmp_path / "model_card.json")
    with pytest.raises(ModelLoadError, match=r"no best_model.pth in .*camp train"):
        run_export(ExportConfig(run=tmp_path, formats=("onnx",)), NullProgress())


def test_cancelled_package_writes_nothing(trained_run: Path, tmp_path: Path) -> None:
    progress = NullProgress()
    progress.cancel()
    with pytest.raises(Cancelled):
        run_export(ExportConfig(run=trained_run, formats=("pth", "onnx"), out=tmp_path / "out"), progress)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- unit tests, generated models

class _DriftingModel:
    """Generated stand-in whose output changes on every call (as a buggy export would)."""

    @staticmethod
    def build():
        import torch

        class Drifting(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)
                self.calls = 0

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                self.calls += 1  # baked into the ONNX graph as a constant at export time
                return torch.sigmoid(self.conv(x)) * 0.5 + 0.01 * self.calls

        return Drifting()


def _generated_card() -> ModelCard:
    return ModelCard(name="generated", architecture={"name": "unet", "in_channels": 3, "base_channels": 4,
                                                     "depth": 1},
                     mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), tile_size=32, resolution_m=0.3,
                     bbox=(32.0, 0.0, 32.01, 0.01))


def test_generated_model_failing_parity_keeps_the_previous_onnx(tmp_path: Path) -> None:
    target = tmp_path / "best_model.onnx"
    target.write_bytes(b"previous good export")
    progress = RecordingProgress()
    with pytest.raises(ExportError, match=r"differs from the torch model by .* previous best_model.onnx was kept"):
        save_onnx(_DriftingModel.build(), _generated_card(), target, progress)
    assert target.read_bytes() == b"previous good export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_model.onnx"]
    assert any("ONNX parity" in line for line in progress.lines)


def test_generated_model_export_leaves_the_callers_model_alone(tmp_path: Path) -> None:
    from trainer.model import build_model

    card = _generated_card()
    model = build_model(card.architecture).train()
    files = export_formats(tmp_path, model, card, ("pth", "pt", "onnx"))
    assert model.training and next(model.parameters()).device.type == "cpu"
    assert sorted(files) == ["onnx", "pt", "pth"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_model.onnx", "best_model.pt", "best_model.pth",
                                                          "model_card.json"]
