"""``camp train``: fit the U-Net with Lightning, pick the threshold, evaluate, export, track.

Order of work, so that mistakes cost seconds, not a training run: refuse a run folder that holds
results (unless overwrite/resume), refuse a GPU request without a GPU, probe the MLflow store,
decode and split the dataset; then train (checkpoints in RUN/checkpoints/: best by
``config.monitor`` and last); then, in the rank-0 process only, reload the best checkpoint, choose
the decision threshold that maximises validation mean IoU, measure the test split at it, and write
model_card.json, metrics.json, plots/ and every model format (trainer.export).

Cancel (progress.cancelled(), Ctrl-C, SIGTERM from a front end) stops after the current batch,
saves RUN/checkpoints/last.ckpt and raises :class:`Cancelled`; ``--resume`` continues from it.
Multi-GPU/multi-node DDP comes from ``--devices/--num-nodes/--strategy``; Lightning re-launches
this command once per extra process, and those processes train but write nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from . import __version__
from .config import TrainConfig
from .datamodule import CampDataModule
from .errors import Cancelled, OutputExistsError, TrainingError
from .fileio import ensure_writable_dir, write_json
from .model import architecture_of, size_multiple
from .modelcard import CARD_FILENAME, ModelCard
from .progress import Progress, SubProgress, check_cancelled
from .task import SegmentationTask, metrics_from_counts, threshold_counts
from .tracking import Tracker, check_reachable, resolve_target, system_info

TRAIN_SHARE = 0.85  # share of the job's progress bar spent in fit(); the rest: evaluation, export
THRESHOLDS = tuple(round(0.1 + 0.05 * i, 2) for i in range(17))  # 0.10 .. 0.90
CURVE_KEYS = ["train_loss", "val_loss", "train_iou", "val_iou", "train_miou", "val_miou"]
EXAMPLES = 4  # test chips shown in plots/examples.png


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    artifacts: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # test split, at ``threshold``
    threshold: float = 0.5
    epochs: int = 0
    seconds: float = 0.0
    mlflow_run_id: str | None = None
    mlflow_uri: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "artifacts": {k: str(v) for k, v in self.artifacts.items()},
                "metrics": self.metrics, "threshold": self.threshold, "epochs": self.epochs,
                "seconds": round(self.seconds, 1), "mlflow_run_id": self.mlflow_run_id, "mlflow_uri": self.mlflow_uri}

    def summary(self) -> str:
        m = self.metrics
        lines = [f"trained {self.epochs} epoch(s) in {self.seconds / 60:.1f} min -> {self.run_dir}"]
        if m:
            lines.append(f"test: building IoU {m.get('iou', 0):.3f}, mean IoU {m.get('miou', 0):.3f}, "
                         f"F1 {m.get('f1', 0):.3f} at threshold {self.threshold:.2f}")
        lines += [f"  {kind:8s} {path}" for kind, path in self.artifacts.items()
                  if kind in ("onnx", "pt", "dlpk", "stac", "card")]
        if self.mlflow_run_id:
            lines.append(f"MLflow: run {self.mlflow_run_id} at {self.mlflow_uri}")
        return "\n".join(lines)


# ---------------------------------------------------------------- callbacks

class _CancelRequested(Exception):
    """Raised inside fit() to leave it at once: unlike ``trainer.should_stop`` it runs no final
    validation and writes no checkpoint, so last.ckpt stays at the last complete epoch."""


class ProgressCallback(Callback):
    """Maps batches to ``progress.report`` (with loss/IoU) and turns cancel into a clean stop."""

    def __init__(self, progress: Progress, max_epochs: int) -> None:
        self.progress = progress
        self.max_epochs = max_epochs
        self.interrupted = False  # set by the signal handler
        self.last_val = ""

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        batches = max(1, int(trainer.num_training_batches))
        epoch = trainer.current_epoch
        fraction = min(1.0, (epoch + (batch_idx + 1) / batches) / self.max_epochs)
        loss = outputs["loss"].item() if isinstance(outputs, dict) else float(outputs)
        self.progress.report(TRAIN_SHARE * fraction, f"epoch {epoch + 1}/{self.max_epochs} batch {batch_idx + 1}/"
                             f"{batches} loss {loss:.3f}{self.last_val}")
        # Every process must agree to stop, or DDP would wait forever for the one that stopped.
        wanted = self.interrupted or self.progress.cancelled()
        if trainer.strategy.reduce_boolean_decision(wanted, all=False):
            raise _CancelRequested

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        self.last_val = f", val IoU {metrics.get('val_iou', 0):.3f} mIoU {metrics.get('val_miou', 0):.3f}"
        if trainer.is_global_zero:
            self.progress.log(f"epoch {trainer.current_epoch + 1}: " +
                              ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())))


@contextlib.contextmanager
def _stop_on_signals(callback: ProgressCallback) -> Iterator[None]:
    """Ctrl-C/SIGTERM during fit() ask for a clean stop (Lightning would ``sys.exit(1)`` on a
    KeyboardInterrupt); a second Ctrl-C interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
    previous = {s: signal.getsignal(s) for s in signals}

    def handler(signum: int, frame: Any) -> None:
        if callback.interrupted:
            raise KeyboardInterrupt
        callback.interrupted = True

    for s in signals:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ---------------------------------------------------------------- checks and set-up

def _is_primary_process() -> bool:
    """False in the extra processes Lightning launches for DDP (they train but write nothing)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def _check_run_dir(config: TrainConfig) -> None:
    out = config.out
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} is a file; give a folder for the run")
    if out.is_dir() and any(out.iterdir()) and not (config.overwrite or config.resume):
        raise OutputExistsError(f"run folder {out} already holds results; pass --overwrite to replace them, "
                                "--resume to continue its training, or choose another --out")


def _check_accelerator(config: TrainConfig) -> None:
    if config.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise TrainingError(f"--accelerator {config.accelerator} was requested but torch {torch.__version__} "
                            f"({build}) sees no CUDA GPU; use --accelerator auto or cpu, or install a CUDA "
                            "build of torch and a working NVIDIA driver (`camp env` shows what is installed)")
    if config.accelerator == "mps" and not torch.backends.mps.is_available():
        raise TrainingError("--accelerator mps was requested but this machine has no Apple GPU (MPS); "
                            "use --accelerator auto or cpu")


def _uses_cuda(config: TrainConfig) -> bool:
    return config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(config: TrainConfig) -> str:
    """'auto' -> bf16 mixed precision on GPUs that support it (about 2x faster, no loss scaling), else fp32."""
    if config.precision != "auto":
        return config.precision
    return "bf16-mixed" if _uses_cuda(config) and torch.cuda.is_bf16_supported() else "32-true"


def _devices(value: str) -> int | str:
    return int(value) if value.strip().isdigit() else value


def _mlflow_state(out: Path) -> dict[str, Any]:
    path = out / "checkpoints" / "mlflow.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _start_tracking(config: TrainConfig, resuming: bool) -> Tracker:
    target = resolve_target(config.tracking_uri, config.out)
    check_reachable(target)
    tracker = Tracker(target, config.experiment)
    state = _mlflow_state(config.out) if resuming else {}
    run_id = state.get("run_id") if state.get("tracking_uri") == target.uri else None
    # Under `mlflow run` (MLproject) the project's run is the one to fill in.
    tracker.start(config.out.name, run_id or os.environ.get("MLFLOW_RUN_ID"))
    return tracker


# ---------------------------------------------------------------- the job

def run_train(config: TrainConfig, progress: Progress) -> TrainResult:
    started = time.monotonic()
    primary = _is_primary_process()
    last_ckpt = config.out / "checkpoints" / "last.ckpt"
    resuming = config.resume and last_ckpt.is_file()
    if primary:
        _check_run_dir(config)
        if config.resume and not resuming:
            progress.log(f"no checkpoint to resume from at {last_ckpt}; training from the start")
    _check_accelerator(config)
    tracker = _start_tracking(config, resuming) if primary else None
    try:
        return _train(config, progress, tracker, resuming, started)
    except BaseException as exc:
        if tracker:
            # The training error matters more than a tracking store that fails to record it.
            with contextlib.suppress(Exception):
                tracker.finish("KILLED" if isinstance(exc, (Cancelled, KeyboardInterrupt)) else "FAILED")
        raise


def _train(config: TrainConfig, progress: Progress, tracker: Tracker | None, resuming: bool,
           started: float) -> TrainResult:
    L.seed_everything(config.seed, workers=True, verbose=False)
    architecture = architecture_of(config)
    progress.report(0.0, "reading chips")
    datamodule = CampDataModule(config.data, config.batch_size, config.val_fraction, config.test_fraction,
                                config.seed, config.split, config.augment, config.num_workers,
                                size_multiple(architecture), config.downsample, log=progress.log)
    datamodule.setup()
    check_cancelled(progress)
    checkpoints = config.out / "checkpoints"
    if tracker is not None:
        if config.overwrite and checkpoints.exists():
            shutil.rmtree(checkpoints)  # old checkpoints must not be mistaken for this run's
        ensure_writable_dir(checkpoints)
        write_json(checkpoints / "mlflow.json", {"tracking_uri": tracker.target.uri, "run_id": tracker.run_id})
        if not resuming:
            tracker.log_params({"config": config.to_dict(), "dataset": datamodule.stats(), "system": system_info(),
                                "precision_resolved": resolve_precision(config)})
    task = SegmentationTask(architecture, config.lr, config.weight_decay, config.loss)
    progress_cb = ProgressCallback(progress, config.epochs)
    checkpoint_cb = ModelCheckpoint(dirpath=checkpoints, filename="best-{epoch:03d}", monitor=config.monitor,
                                    mode="max", save_top_k=1, save_last=True)
    callbacks: list[Callback] = [checkpoint_cb, progress_cb]
    if config.early_stopping:
        callbacks.append(EarlyStopping(monitor=config.monitor, mode="max", patience=config.early_stopping))
    trainer = L.Trainer(
        accelerator=config.accelerator, devices=_devices(config.devices), num_nodes=config.num_nodes,
        strategy=config.strategy, precision=resolve_precision(config), max_epochs=config.epochs,
        max_time={"minutes": config.max_minutes} if config.max_minutes else None,
        callbacks=callbacks, logger=tracker.logger() if tracker else False, default_root_dir=config.out,
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1, deterministic=False)
    last = checkpoints / "last.ckpt"
    try:
        with _stop_on_signals(progress_cb):
            trainer.fit(task, datamodule=datamodule, ckpt_path=str(last) if resuming else None)
    except _CancelRequested:
        kept = (f"the last complete epoch is saved in {last}: run again with --resume to continue"
                if last.is_file() else "no epoch had completed, so there is nothing to resume from")
        raise Cancelled(f"training cancelled in epoch {trainer.current_epoch + 1}; {kept}") from None
    if not trainer.is_global_zero:
        return TrainResult(run_dir=config.out, epochs=trainer.current_epoch)
    assert tracker is not None
    best = checkpoint_cb.best_model_path or str(last)
    progress.log(f"best checkpoint: {best} ({config.monitor} {float(checkpoint_cb.best_model_score or 0):.4f})")
    return _finish(config, progress, tracker, datamodule, best, trainer.current_epoch, started)


def _finish(config: TrainConfig, progress: Progress, tracker: Tracker, datamodule: CampDataModule, best: str,
            epochs: int, started: float) -> TrainResult:
    """Threshold, test metrics, model card, metrics.json, plots, exports, MLflow artifacts."""
    device = "cuda" if _uses_cuda(config) else "cpu"
    model = SegmentationTask.load_from_checkpoint(best, map_location="cpu").model.to(device).eval()
    progress.report(TRAIN_SHARE, "choosing the threshold on the validation split")
    val_counts = threshold_counts(model, datamodule.val_dataloader(), datamodule.normalise, THRESHOLDS, device)
    search = [(t, metrics_from_counts(*c.tolist())) for t, c in zip(THRESHOLDS, val_counts, strict=True)]
    # Highest validation mean IoU; ties go to the threshold nearest 0.5 (the least surprising).
    threshold, val_metrics = max(search, key=lambda s: (round(s[1]["miou"], 6), -abs(s[0] - 0.5)))
    test_counts = threshold_counts(model, datamodule.test_dataloader(), datamodule.normalise, [threshold, 0.5], device)
    test_metrics = {k: round(v, 4) for k, v in metrics_from_counts(*test_counts[0].tolist()).items()}
    check_cancelled(progress)
    seconds = time.monotonic() - started
    dataset = datamodule.dataset
    # Shrunk chips: the model saw coarser ground pixels, one XYZ zoom level less per halving.
    resolution = dataset.resolution_m * config.downsample if dataset.resolution_m else None
    zoom = dataset.zoom - (config.downsample.bit_length() - 1) if dataset.zoom is not None else None
    card = ModelCard(
        name=config.out.name or "camp-unet", architecture=architecture_of(config), mean=datamodule.mean,
        std=datamodule.std, tile_size=datamodule.tile_size, threshold=threshold, resolution_m=resolution,
        zoom=zoom, bbox=tuple(dataset.bbox_lonlat) if dataset.bbox_lonlat else None, metrics=test_metrics,
        training={"hyperparameters": _hyperparameters(config), "dataset": datamodule.stats(), "system": system_info(),
                  "accelerator": "cuda" if device == "cuda" else "amd64", "epochs": epochs,
                  "seconds": round(seconds, 1), "mlflow_run_id": tracker.run_id},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), version=__version__)
    history = tracker.history(CURVE_KEYS)
    metrics_doc = {"threshold": threshold, "test": test_metrics,
                   "test_at_0.5": {k: round(v, 4) for k, v in metrics_from_counts(*test_counts[1].tolist()).items()},
                   "val": {k: round(v, 4) for k, v in val_metrics.items()},
                   "threshold_search": [{"threshold": t, "val_miou": round(m["miou"], 4)} for t, m in search],
                   "test_confusion": dict(zip(("tp", "fp", "fn", "tn"), test_counts[0].tolist(), strict=True)),
                   "history": history, "epochs": epochs, "seconds": round(seconds, 1)}
    out = config.out
    card.write(out / CARD_FILENAME)
    write_json(out / "metrics.json", metrics_doc)
    progress.report(0.88, "drawing plots")
    plots = _write_plots(out / "plots", model, datamodule, history, test_counts[0].tolist(), threshold, device)
    check_cancelled(progress)
    from .export import export_all

    exported = export_all(out, model.cpu().eval(), card, SubProgress(progress, 0.9, 0.97, "export: "))
    progress.report(0.97, "logging to MLflow")
    tracker.log_metrics({f"test_{k}": v for k, v in test_metrics.items()} | {"threshold": threshold}, step=epochs)
    files = [*exported.values(), out / CARD_FILENAME, out / "metrics.json"]
    tracker.log_artifacts(files, plots, config.data if config.log_dataset else None)
    if "onnx" in exported:
        tracker.log_model(exported["onnx"], config.register_model)
    tracker.finish()
    artifacts = {**exported, "card": out / CARD_FILENAME, "metrics": out / "metrics.json",
                 **{f"plot_{p.stem}": p for p in plots}, "best_checkpoint": Path(best),
                 "last_checkpoint": out / "checkpoints" / "last.ckpt"}
    progress.report(1.0, f"done: test IoU {test_metrics['iou']:.3f}, mean IoU {test_metrics['miou']:.3f}")
    return TrainResult(out, artifacts, test_metrics, threshold, epochs, time.monotonic() - started,
                       tracker.run_id, tracker.target.uri)


def _hyperparameters(config: TrainConfig) -> dict[str, Any]:
    keys = ("epochs", "batch_size", "lr", "weight_decay", "base_channels", "depth", "loss", "augment", "downsample",
            "split",
            "val_fraction", "test_fraction", "seed", "devices", "num_nodes", "strategy", "early_stopping")
    return {k: getattr(config, k) for k in keys} | {"precision": resolve_precision(config)}


def _write_plots(folder: Path, model: torch.nn.Module, datamodule: CampDataModule, history: dict[str, list[float]],
                 confusion: list[float], threshold: float, device: str) -> list[Path]:
    from .plots import plot_confusion, plot_curves, plot_examples

    assert datamodule.split is not None
    test = torch.as_tensor(datamodule.split.test)
    # The test chips with the most structure pixels say most about what the model learnt.
    order = datamodule.masks[test].flatten(1).sum(dim=1).argsort(descending=True)[:EXAMPLES]
    chosen = test[order]
    images = datamodule.images[chosen]
    with torch.no_grad():
        probabilities = model(datamodule.normalise(images.to(device)))[:, 0].float().cpu().numpy()
    return [plot_curves(history, folder / "curves.png"),
            plot_confusion(confusion, threshold, folder / "confusion_matrix.png"),
            plot_examples(images.numpy(), probabilities, datamodule.masks[chosen, 0].numpy(), threshold,
                          folder / "examples.png")]
