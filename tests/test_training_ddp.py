"""Two-process DDP training on CPU (gloo) through the CLI, to the end: one set of artifacts, one
MLflow run. Runs `python -m trainer train` in a subprocess because Lightning's DDP launcher
re-executes the command line for each extra process. Generated chips (tests/synthetic_chips.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_chips import write_synthetic_chips

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_process_cpu_ddp_trains_and_rank_zero_writes_the_artifacts(tmp_path):
    import onnxruntime as ort
    import torch
    from mlflow.tracking import MlflowClient

    from trainer.export import load_run_model
    from trainer.modelcard import ModelCard

    data = write_synthetic_chips(tmp_path / "chips", cols=4, rows=4, size=32, seed=11)
    out = tmp_path / "run"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [sys.executable, "-m", "trainer", "train", "--data", str(data), "--out", str(out), "--epochs", "2",
               "--batch-size", "2", "--base-channels", "4", "--depth", "2", "--accelerator", "cpu", "--devices", "2",
               "--strategy", "ddp", "--split", "random", "--tracking-uri", store]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr

    card = ModelCard.read(out)
    assert card.training["hyperparameters"]["strategy"] == "ddp" and card.training["hyperparameters"]["devices"] == "2"
    assert card.training["epochs"] == 2
    model, _ = load_run_model(out)
    session = ort.InferenceSession(str(out / "best_model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(onnx_out, model(torch.from_numpy(x)).detach().numpy(), atol=1e-5)
    assert sorted(p.name for p in out.glob("best_model.*")) == ["best_model.dlpk", "best_model.onnx",
                                                                "best_model.pt", "best_model.pth"]
    assert not list(tmp_path.glob("mlruns")) and not list(out.glob(".*staging*"))

    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("camp-mapper").experiment_id])
    assert run.info.status == "FINISHED"
    # 12 training chips over 2 processes, batch 2: 3 steps per epoch, metrics once per epoch.
    assert len(client.get_metric_history(run.info.run_id, "val_miou")) == 2
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [2, 5]
