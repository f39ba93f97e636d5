"""The LightningModule: the U-Net, its loss, its metrics and its optimiser.

Checkpointing, early stopping, progress and tracking live in callbacks set up by
:mod:`trainer.training`; this module holds only what defines the learning problem.

Metrics (binary, threshold 0.5 during training) are one ``MetricCollection`` cloned per stage, so
the logged names are ``train_iou``, ``val_miou``, ``test_f1`` ...: ``acc`` (pixel accuracy), ``iou``
(building IoU), ``miou`` (mean IoU over background and building: the default checkpoint monitor,
because building IoU alone flatters a model that marks everything), ``f1``, ``precision``,
``recall``. After training the decision threshold is chosen on validation data with
:func:`threshold_counts` and :func:`metrics_from_counts`, which compute the same quantities.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryRecall,
    BinaryStatScores,
)

from .errors import TrainingError
from .model import build_model


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, 0 where the denominator is 0 (torchmetrics' zero_division=0)."""
    denominator = denominator.to(torch.float64)
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1), torch.zeros_like(denominator))


class BinaryMeanIoU(BinaryStatScores):
    """Mean of background IoU and building IoU (shares its counts with the other binary metrics)."""

    higher_is_better = True

    def compute(self) -> torch.Tensor:
        tp, fp, tn, fn = self._final_state()
        return ((_ratio(tp, tp + fp + fn) + _ratio(tn, tn + fp + fn)) / 2).float()


def segmentation_metrics(threshold: float = 0.5) -> MetricCollection:
    # Inputs are ours (probabilities, 0/1 masks): skipping validation saves a pass over every pixel.
    return MetricCollection({
        "acc": BinaryAccuracy(threshold=threshold, validate_args=False),
        "iou": BinaryJaccardIndex(threshold=threshold, validate_args=False),
        "miou": BinaryMeanIoU(threshold=threshold, validate_args=False),
        "f1": BinaryF1Score(threshold=threshold, validate_args=False),
        "precision": BinaryPrecision(threshold=threshold, validate_args=False),
        "recall": BinaryRecall(threshold=threshold, validate_args=False),
    })


def metrics_from_counts(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    """The metric set of :func:`segmentation_metrics` from confusion counts (pixels)."""
    t = torch.tensor([tp, fp, fn, tn], dtype=torch.float64)
    tp_, fp_, fn_, tn_ = t
    iou = _ratio(tp_, tp_ + fp_ + fn_)
    return {
        "acc": float(_ratio(tp_ + tn_, t.sum())),
        "iou": float(iou),
        "miou": float((iou + _ratio(tn_, tn_ + fp_ + fn_)) / 2),
        "f1": float(_ratio(2 * tp_, 2 * tp_ + fp_ + fn_)),
        "precision": float(_ratio(tp_, tp_ + fp_)),
        "recall": float(_ratio(tp_, tp_ + fn_)),
    }


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice over the whole batch (per-chip Dice is undefined on chips without buildings)."""
    probability = torch.sigmoid(logits)
    intersection = (probability * target).sum()
    return 1 - (2 * intersection + smooth) / (probability.sum() + target.sum() + smooth)


class SegmentationTask(L.LightningModule):
    """Binary segmentation of camp structures with a U-Net (``self.model`` is the exported model)."""

    def __init__(self, architecture: dict[str, Any], lr: float = 3e-3, weight_decay: float = 1e-4,
                 loss: Literal["bce", "bce+dice"] = "bce+dice") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(architecture)
        metrics = segmentation_metrics()
        self.train_metrics = metrics.clone(prefix="train_")
        self.val_metrics = metrics.clone(prefix="val_")
        self.test_metrics = metrics.clone(prefix="test_")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, 1, H, W]."""
        return self.model.net(x)

    def loss_fn(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(logits, target)
        if self.hparams.loss == "bce+dice":
            loss = loss + dice_loss(logits, target)
        return loss

    def _step(self, batch: Sequence[torch.Tensor], stage: str, metrics: MetricCollection) -> torch.Tensor:
        x, target = batch
        logits = self(x)
        loss = self.loss_fn(logits.float(), target)
        if stage == "train" and not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at epoch {self.current_epoch} step {self.global_step}; lower --lr "
                f"(now {self.hparams.lr:g}), use --precision 32, or check the chips for corrupt pixels")
        metrics.update(torch.sigmoid(logits.detach().float()), target.int())
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=x.shape[0])
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return loss

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", self.train_metrics)

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val", self.val_metrics)

    def test_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test", self.test_metrics)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        # One-cycle: warm up, then anneal; converges in few epochs, which is what a CPU user can afford.
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.lr, total_steps=max(1, int(self.trainer.estimated_stepping_batches)),
            pct_start=0.2)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


@torch.no_grad()
def threshold_counts(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     normalise: Callable[[torch.Tensor], torch.Tensor], thresholds: Sequence[float],
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Confusion counts per threshold, float64 [T, 4] = (tp, fp, fn, tn), of a probability ``model``
    over uint8 (image, mask) batches. Counts, not stored probabilities: memory stays flat."""
    model.eval()
    cuts = torch.tensor(list(thresholds), device=device).view(-1, 1)
    counts = torch.zeros(len(thresholds), 4, dtype=torch.float64, device=device)
    for images, masks in batches:
        probability = model(normalise(images.to(device))).flatten()
        truth = masks.to(device).flatten().bool()
        predicted = probability.unsqueeze(0) >= cuts  # [T, pixels]
        tp = (predicted & truth).sum(dim=1)
        fp = (predicted & ~truth).sum(dim=1)
        positives = truth.sum()
        counts += torch.stack([tp, fp, positives - tp, truth.numel() - positives - fp], dim=1).double()
    return counts.cpu()
