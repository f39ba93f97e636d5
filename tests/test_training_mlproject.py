"""The MLproject entry points run through `mlflow run . --env-manager local` (real MLflow CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_mlproject_declares_every_job_as_an_entry_point():
    spec = yaml.safe_load((ROOT / "MLproject").read_text())
    points = spec["entry_points"]
    assert set(points) == {"fetch", "train", "detect", "validate_stac", "package"}
    for name, point in points.items():
        assert point["command"].startswith("python -m trainer "), name
        for parameter in point["parameters"]:
            assert "{" + parameter + "}" in point["command"], (name, parameter)


@pytest.mark.sample_data
def test_validate_stac_entry_point_runs_through_mlflow_run(trained_run, schema_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The entry points call `python`: the interpreter of this environment must come first on PATH.
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [str(Path(sys.executable).parent / "mlflow"), "run", str(ROOT), "-e", "validate_stac",
               "--env-manager", "local", "-P", f"item={trained_run / 'stac_item.json'}",
               "-P", f"schema-dir={schema_dir}"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "valid" in done.stdout
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("Default").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["item"] == str(trained_run / "stac_item.json")
