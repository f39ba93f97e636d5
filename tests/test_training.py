"""camp train: refusals before any work, NaN stop, cancel + resume, artifacts, and quality on Kampala.

Generated chip folders (tests/synthetic_chips.py) exercise the mechanics with a tiny U-Net; the
accuracy claim uses the real Kampala chips through the session's ``trained_run``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_chips import write_synthetic_chips

from trainer.config import TrainConfig
from trainer.errors import Cancelled, OutputExistsError, TrainingError
from trainer.modelcard import ModelCard
from trainer.progress import RecordingProgress
from trainer.training import THRESHOLDS, resolve_precision, run_train


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    return write_synthetic_chips(tmp_path_factory.mktemp("generated") / "chips", cols=4, rows=4, size=32)


def _config(data: Path, tmp_path: Path, **changes) -> TrainConfig:
    options = {"epochs": 1, "batch_size": 4, "base_channels": 4, "depth": 2, "accelerator": "cpu", "devices": "1",
               "split": "random", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"} | changes
    return TrainConfig(data=data, out=tmp_path / "run", **options)


class CancelAfter(RecordingProgress):
    """Asks to cancel once ``batches`` training batches were reported."""

    def __init__(self, batches: int) -> None:
        super().__init__()
        self.batches = batches

    def cancelled(self) -> bool:
        return sum("batch" in m for _, m in self.events) >= self.batches


def test_precision_auto_is_bf16_only_on_capable_gpus(generated, tmp_path):
    capable = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert resolve_precision(_config(generated, tmp_path, accelerator="auto")) == ("bf16-mixed" if capable else "32-true")
    assert resolve_precision(_config(generated, tmp_path, accelerator="cpu")) == "32-true"
    assert resolve_precision(_config(generated, tmp_path, precision="16-mixed")) == "16-mixed"


def test_an_existing_run_folder_is_refused_and_kept(generated, tmp_path):
    config = _config(generated, tmp_path)
    config.out.mkdir()
    (config.out / "notes.txt").write_text("earlier results")
    with pytest.raises(OutputExistsError, match="--overwrite.*--resume"):
        run_train(config, RecordingProgress())
    assert [p.name for p in config.out.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything was tracked


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_gpu_request_without_a_gpu_fails_clearly(generated, tmp_path):
    with pytest.raises(TrainingError, match="--accelerator gpu was requested.*no CUDA GPU.*--accelerator auto or cpu"):
        run_train(_config(generated, tmp_path, accelerator="gpu"), RecordingProgress())
    assert not (tmp_path / "run").exists()


def test_a_diverging_loss_stops_training_with_advice(generated, tmp_path):
    with pytest.raises(TrainingError, match=r"loss became (nan|inf).*epoch 0 step \d+.*lower --lr"):
        run_train(_config(generated, tmp_path, lr=1e30, epochs=2), RecordingProgress())
    assert not (tmp_path / "run" / "model_card.json").exists()


def test_cancel_keeps_last_checkpoint_and_resume_finishes_the_run(generated, tmp_path):
    from mlflow.tracking import MlflowClient

    config = _config(generated, tmp_path, epochs=3)
    with pytest.raises(Cancelled, match="epoch 2.*--resume"):
        run_train(config, CancelAfter(batches=4))  # 3 batches per epoch: stops in epoch 2
    last = config.out / "checkpoints" / "last.ckpt"
    assert last.is_file() and not (config.out / "model_card.json").exists()
    stopped_at = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert stopped_at == 3  # the end of epoch 1: the interrupted epoch is run again

    with pytest.raises(OutputExistsError):  # neither overwrite nor resume
        run_train(config, RecordingProgress())
    progress = RecordingProgress()
    result = run_train(config.replace(resume=True), progress)
    assert result.epochs == 3
    assert progress.events[0][1] == "reading chips" and progress.events[-1][0] == 1.0
    state = torch.load(config.out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 9  # 3 epochs x 3 batches: none lost, none repeated

    # One MLflow run across the interruption, with one validation point per epoch.
    client = MlflowClient(config.tracking_uri)
    assert client.get_run(result.mlflow_run_id).info.status == "FINISHED"
    history = client.get_metric_history(result.mlflow_run_id, "val_miou")
    assert len(history) == 3

    # The finished run holds every artifact, consistent with each other.
    card = ModelCard.read(result.run_dir)
    assert card.threshold == result.threshold and result.threshold in THRESHOLDS
    assert card.architecture == {"name": "unet", "in_channels": 3, "base_channels": 4, "depth": 2}
    assert card.tile_size == 32 and card.training["accelerator"] == "amd64" and card.training["epochs"] == 3
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["test"] == result.metrics == card.metrics
    assert max(metrics["threshold_search"], key=lambda s: s["val_miou"])["val_miou"] == metrics["val"]["miou"]
    for name in ("curves", "confusion_matrix", "examples"):
        from PIL import Image

        with Image.open(result.run_dir / "plots" / f"{name}.png") as png:
            assert png.width > 200 and png.height > 200
    for kind in ("pth", "pt", "onnx", "dlpk", "stac"):
        assert result.artifacts[kind].is_file()
    assert set(result.to_dict()["artifacts"]) >= {"pth", "onnx", "card", "metrics"}
    assert "test: building IoU" in result.summary()


@pytest.mark.sample_data
def test_kampala_model_finds_buildings_well_above_chance(trained_run):
    """The session's small U-Net, trained on the real Kampala chips, beats every trivial predictor."""
    import onnxruntime as ort

    from trainer.datamodule import CampDataModule

    card = ModelCard.read(trained_run)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    positive = card.training["dataset"]["positive_fraction_train"]
    # "All building" scores IoU = share of building pixels; "all background" mean IoU < 0.5.
    assert card.metrics["iou"] > 1.5 * positive, (card.metrics, positive)
    assert card.metrics["miou"] > 0.55 and card.metrics["f1"] > 0.5, card.metrics
    assert metrics["test"]["miou"] >= metrics["test_at_0.5"]["miou"] - 0.05

    # The exported ONNX reproduces the recorded test IoU on the same test chips.
    dm = CampDataModule(card.training["dataset"]["data"], seed=7, split="spatial",
                        downsample=card.training["dataset"]["downsample"], log=lambda m: None)
    dm.setup()
    assert dm.mean == card.mean
    session = ort.InferenceSession(str(trained_run / "best_model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    tp = fp = fn = 0
    for images, masks in dm.test_dataloader():
        probability = np.concatenate([session.run(None, {name: dm.normalise(images[i:i + 1]).numpy()})[0]
                                      for i in range(len(images))])
        predicted, truth = probability >= card.threshold, masks.numpy() > 0
        tp += int((predicted & truth).sum())
        fp += int((predicted & ~truth).sum())
        fn += int((~predicted & truth).sum())
    assert tp / (tp + fp + fn) == pytest.approx(card.metrics["iou"], abs=2e-3)
