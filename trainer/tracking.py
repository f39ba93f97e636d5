"""MLflow tracking of a training run: where, what, and failing early when the server is down.

Where: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else an embedded store beside the run
folder (``sqlite:///RUN_PARENT/mlflow.db`` with artifacts in ``RUN_PARENT/mlartifacts``), never the
current directory (MLflow's own default). Any sqlite store keeps artifacts beside its database. A remote server is probed before training starts, so a
typo in the URI costs seconds, not a training run.

What: parameters (config, dataset facts, system), per-epoch train/val metrics (through Lightning's
``MLFlowLogger`` on the same run), test metrics, artifacts in folders (``models/`` pth/pt/onnx,
``metadata/`` model_card.json + stac_item.json + metrics.json, ``esri/`` the .dlpk, ``plots/``), and
the ONNX model logged as an MLflow model with a tensor signature (registered under
``--register-model`` when given).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .errors import TrackingError

ARTIFACT_FOLDERS = {".pth": "models", ".pt": "models", ".onnx": "models", ".dlpk": "esri", ".json": "metadata"}
PARAM_VALUE_LIMIT = 6000  # MLflow's limit on a parameter value


@dataclass(frozen=True)
class TrackingTarget:
    uri: str
    artifact_location: str | None = None  # where new experiments keep artifacts (embedded store only)

    @property
    def is_remote(self) -> bool:
        return urlparse(self.uri).scheme in ("http", "https")


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (four slashes: absolute; three: relative)."""
    if not uri.startswith("sqlite:///"):
        return None
    name = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if name in ("", ":memory:") else Path(name)


def resolve_target(tracking_uri: str | None, run_dir: Path) -> TrackingTarget:
    """The tracking URI for a run (see the module docstring for the order).

    A sqlite store keeps new experiments' artifacts in ``mlartifacts`` beside its database file:
    MLflow's own default for it is ``./mlruns`` in whatever the current directory happens to be.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = f"sqlite:///{Path(run_dir).expanduser().resolve().parent / 'mlflow.db'}"
    database = _sqlite_file(uri)
    if database is None:
        return TrackingTarget(uri)
    return TrackingTarget(uri, (database.resolve().parent / "mlartifacts").as_uri())


def check_reachable(target: TrackingTarget, timeout: float = 5.0) -> None:
    """Raise :class:`TrackingError` unless the tracking store can be used (call before training)."""
    if target.is_remote:
        import requests

        url = target.uri.rstrip("/") + "/health"
        try:
            response = requests.get(url, timeout=timeout)
            response.raise_for_status()
        except requests.RequestException as exc:
            raise TrackingError(
                f"MLflow tracking server {target.uri} is not reachable ({type(exc).__name__}: {exc}). Start it "
                "(e.g. `mlflow server --host 127.0.0.1 --port 5000`), correct --tracking-uri / $MLFLOW_TRACKING_URI, "
                "or leave both unset to track in a local sqlite store beside the run folder") from None
        return
    parsed = urlparse(target.uri)
    database = _sqlite_file(target.uri)
    if database is not None:
        folder = database.parent
    elif parsed.scheme in ("", "file"):
        folder = Path(parsed.path)
    else:
        return  # databricks, postgresql ...: MLflow reports its own errors
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(f"cannot create the MLflow store folder {folder} for {target.uri}: {exc}; "
                            "pass a writable --tracking-uri") from None


def system_info() -> dict[str, Any]:
    """Machine facts for the run's parameters: CPU, RAM, Python/torch versions, GPUs."""
    import lightning
    import torch

    ram = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        ram = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "ram_gb": ram, "torch": torch.__version__,
            "lightning": lightning.__version__, "cuda_available": torch.cuda.is_available(),
            "gpus": gpu_names()}


def gpu_names() -> list[str]:
    """GPU names from NVML (sees GPUs even when torch is a CPU build), else from torch, else none."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return [_text(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)))
                    for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver, no library: NVML raises assorted errors
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return []


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> {"a.b": "value"} with values cut to MLflow's parameter limit."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)[:PARAM_VALUE_LIMIT]
    return out


class Tracker:
    """One MLflow run: created (or resumed) before training, filled in after it."""

    def __init__(self, target: TrackingTarget, experiment: str, run_id: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.target = target
        self.experiment = experiment
        self.client = MlflowClient(tracking_uri=target.uri)
        self.run_id = run_id or ""

    def start(self, run_name: str, resume_run_id: str | None = None) -> str:
        """Create the run (or reopen ``resume_run_id``); returns its id."""
        from mlflow.exceptions import MlflowException

        try:
            if resume_run_id:
                try:
                    self.client.get_run(resume_run_id)
                    self.run_id = resume_run_id
                    self.client.update_run(resume_run_id, status="RUNNING")
                    return self.run_id
                except MlflowException:
                    pass  # the store was reset: track the resumed training as a new run
            found = self.client.get_experiment_by_name(self.experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(
                self.experiment, artifact_location=self.target.artifact_location)
            self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        except MlflowException as exc:
            raise TrackingError(f"MLflow at {self.target.uri} refused the run: {exc}") from None
        return self.run_id

    def logger(self) -> Any:
        """Lightning's MLflow logger on this run: per-epoch metrics go to the same run."""
        from lightning.pytorch.loggers import MLFlowLogger

        return MLFlowLogger(experiment_name=self.experiment, tracking_uri=self.target.uri, run_id=self.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def history(self, keys: list[str]) -> dict[str, list[float]]:
        """Per-epoch values of ``keys`` in step order (the whole run, across resumes)."""
        out = {}
        for key in keys:
            points = sorted(self.client.get_metric_history(self.run_id, key), key=lambda m: (m.step, m.timestamp))
            if points:
                out[key] = [m.value for m in points]
        return out

    def log_artifacts(self, files: list[Path], plots: list[Path], dataset: Path | None = None) -> None:
        """Files into models/, metadata/ or esri/ by type; plots into plots/; optionally the dataset."""
        for path in files:
            self.client.log_artifact(self.run_id, str(path), ARTIFACT_FOLDERS.get(path.suffix, "other"))
        for path in plots:
            self.client.log_artifact(self.run_id, str(path), "plots")
        if dataset is not None:
            self.client.log_artifacts(self.run_id, str(dataset), "dataset")

    def log_model(self, onnx_path: Path, registered_name: str | None = None) -> str:
        """Log the ONNX model as an MLflow model with a tensor signature; returns its model URI."""
        import mlflow
        import onnx
        from mlflow.models import ModelSignature
        from mlflow.types import Schema

        model = onnx.load(str(onnx_path))
        signature = ModelSignature(inputs=Schema([_tensor_spec(v) for v in model.graph.input]),
                                   outputs=Schema([_tensor_spec(v) for v in model.graph.output]))
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(self.target.uri)
        try:
            with mlflow.start_run(run_id=self.run_id):
                # Explicit requirements: MLflow's inference re-imports the model in a subprocess
                # (seconds per run) only to find these two.
                info = mlflow.onnx.log_model(model, name="model", signature=signature, save_as_external_data=False,
                                             registered_model_name=registered_name,
                                             pip_requirements=[f"onnx=={onnx.__version__}",
                                                               f"onnxruntime=={_version('onnxruntime')}"])
        finally:
            mlflow.set_tracking_uri(previous)
        return info.model_uri

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _tensor_spec(value: Any) -> Any:
    """An MLflow TensorSpec from a float32 ONNX graph input/output (dynamic dims -> -1)."""
    import numpy as np
    from mlflow.types import TensorSpec

    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
    return TensorSpec(np.dtype(np.float32), tuple(dims), value.name)
