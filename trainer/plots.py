"""Training report figures in RUN/plots/: curves, test confusion matrix, example predictions.

matplotlib's Agg backend (no display needed: CLI, QGIS worker processes, CI); every PNG is written
atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import atomic_path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_curves(history: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Loss and IoU per epoch, training vs validation."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = (("loss", ("train_loss", "val_loss")), ("IoU", ("train_iou", "val_iou", "train_miou", "val_miou")))
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            values = history.get(key, [])
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_confusion(counts: Sequence[float], threshold: float, path: Path) -> Path:
    """2x2 pixel confusion matrix (tp, fp, fn, tn), as shares of each true class."""
    plt = _pyplot()
    tp, fp, fn, tn = (float(v) for v in counts)
    matrix = np.array([[tn, fp], [fn, tp]])
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(col, row, f"{shares[row, col]:.1%}\n{int(value):,} px", ha="center", va="center",
                color="white" if shares[row, col] > 0.5 else "black")
    ax.set_xticks([0, 1], ["background", "structure"])
    ax.set_yticks([0, 1], ["background", "structure"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test pixels, threshold {threshold:.2f}")
    return _save(fig, path)


def plot_examples(images: np.ndarray, probabilities: np.ndarray, masks: np.ndarray, threshold: float,
                  path: Path) -> Path:
    """One row per chip: image, probability, prediction outline vs label (uint8 [N,3,H,W], [N,H,W])."""
    plt = _pyplot()
    rows = len(images)
    fig, axes = plt.subplots(rows, 3, figsize=(9, 3 * rows), squeeze=False)
    for row in range(rows):
        rgb = images[row].transpose(1, 2, 0)
        axes[row, 0].imshow(rgb)
        axes[row, 1].imshow(probabilities[row], cmap="magma", vmin=0, vmax=1)
        # Green: label only (missed), red: prediction only (false alarm), yellow: both.
        overlay = np.zeros((*masks[row].shape, 3))
        overlay[..., 0] = probabilities[row] >= threshold
        overlay[..., 1] = masks[row] > 0
        axes[row, 2].imshow(rgb)
        axes[row, 2].imshow(overlay, alpha=0.45)
        for col, title in enumerate(("input", "probability", "prediction (red) / label (green)")):
            axes[row, col].set_axis_off()
            if row == 0:
                axes[row, col].set_title(title)
    return _save(fig, path)
