"""MLflow tracking against a real `mlflow server` on 127.0.0.1, the embedded default store, and an
unreachable server. Training runs on generated chips (tests/synthetic_chips.py) with a tiny U-Net."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from synthetic_chips import write_synthetic_chips

from trainer.config import TrainConfig
from trainer.errors import TrackingError, TrainingError
from trainer.progress import RecordingProgress
from trainer.tracking import resolve_target
from trainer.training import run_train

EPOCHS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed below, after the server stops
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'x.db'}",
         "--default-artifact-root", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(url + "/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(1)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers: its own session
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    return write_synthetic_chips(tmp_path_factory.mktemp("generated") / "chips", cols=4, rows=4, size=32, seed=5)


def _config(data: Path, out: Path, **changes) -> TrainConfig:
    options = {"epochs": EPOCHS, "batch_size": 4, "base_channels": 4, "depth": 2, "accelerator": "cpu",
               "devices": "1", "split": "random"} | changes
    return TrainConfig(data=data, out=out, **options)


def test_a_run_on_a_tracking_server_holds_epochs_params_artifacts_and_the_model(mlflow_server, generated, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    config = _config(generated, tmp_path / "run", tracking_uri=mlflow_server, experiment="camp-tests",
                     register_model="camp-test-unet")
    result = run_train(config, RecordingProgress())
    assert result.mlflow_uri == mlflow_server
    client = MlflowClient(mlflow_server)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "camp-tests"

    for key in ("train_loss", "val_loss", "train_iou", "val_iou", "val_miou", "val_f1", "val_precision"):
        assert len(client.get_metric_history(run.info.run_id, key)) == EPOCHS, key
    assert run.data.metrics["test_iou"] == pytest.approx(result.metrics["iou"])
    assert run.data.metrics["threshold"] == pytest.approx(result.threshold)

    params = run.data.params
    assert params["config.lr"] == str(config.lr) and params["config.epochs"] == str(EPOCHS)
    assert params["dataset.chips"] == "16" and params["dataset.split.mode"] == "random"
    assert int(params["system.cpu_count"]) >= 1 and params["system.torch"].startswith("2.")

    def names(folder: str) -> set[str]:
        return {Path(f.path).name for f in client.list_artifacts(run.info.run_id, folder)}

    assert names("models") == {"best_model.pth", "best_model.pt", "best_model.onnx"}
    assert {"model_card.json", "stac_item.json", "metrics.json"} <= names("metadata")
    assert names("esri") == {"best_model.dlpk"}
    assert names("plots") == {"curves.png", "confusion_matrix.png", "examples.png"}
    card = Path(client.download_artifacts(run.info.run_id, "metadata/model_card.json", str(tmp_path)))
    assert card.read_text() == (result.run_dir / "model_card.json").read_text()

    # The registered model is the ONNX graph with a tensor signature, and it predicts probabilities.
    versions = client.search_model_versions("name='camp-test-unet'")
    assert len(versions) == 1 and versions[0].run_id == run.info.run_id
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model("models:/camp-test-unet/1")
    inputs = model.metadata.get_input_schema().inputs
    assert list(inputs[0].shape)[1:] == [3, 32, 32]
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    (probability,) = model.predict({inputs[0].name: x}).values()
    assert probability.shape == (2, 1, 32, 32) and 0 <= probability.min() and probability.max() <= 1


def test_an_unreachable_server_fails_before_training(generated, tmp_path):
    config = _config(generated, tmp_path / "run", tracking_uri="http://127.0.0.1:9")
    with pytest.raises(TrackingError, match=r"http://127\.0\.0\.1:9 is not reachable.*mlflow server.*--tracking-uri"):
        run_train(config, RecordingProgress())
    assert not (tmp_path / "run").exists()


def test_default_store_lives_beside_the_run_folder_not_in_the_working_directory(generated, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    target = resolve_target(None, tmp_path / "runs" / "first")
    assert target.uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert target.artifact_location == (tmp_path / "runs" / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert resolve_target(None, tmp_path / "x").uri == "http://tracking.example:5000"
    assert resolve_target("sqlite:///elsewhere.db", tmp_path / "x").uri == "sqlite:///elsewhere.db"
    explicit = resolve_target(f"sqlite:///{tmp_path / 'db' / 'x.db'}", tmp_path / "x")
    assert explicit.artifact_location == (tmp_path / "db" / "mlartifacts").as_uri()  # not ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    # A run that fails (diverging loss) is still tracked, in the embedded store, and marked FAILED.
    with pytest.raises(TrainingError):
        run_train(_config(generated, tmp_path / "runs" / "first", lr=1e30), RecordingProgress())
    assert list(cwd.iterdir()) == []
    client = MlflowClient(target.uri)
    experiment = client.get_experiment_by_name("camp-mapper")
    assert experiment.artifact_location == target.artifact_location
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED" and run.data.params["config.lr"] == "1e+30"
