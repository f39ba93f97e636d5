"""Generated chip folders for unit tests of the training code (never for accuracy claims).

A "folders" layout (chips/ + labels/ PNGs named Z-X-Y so each chip has a tile): textured noise with
bright rectangles as "structures", and the matching mask. Small enough to train on in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ZOOM = 18
ORIGIN = (140000, 120000)


def write_synthetic_chips(root: Path, cols: int = 4, rows: int = 3, size: int = 32, seed: int = 0,
                          mask_scale: int = 1, with_masks: bool = True) -> Path:
    """Write ``cols`` x ``rows`` generated chips; masks hold 0/``mask_scale`` (1 or 255)."""
    rng = np.random.default_rng(seed)
    (root / "chips").mkdir(parents=True, exist_ok=True)
    if with_masks:
        (root / "labels").mkdir(parents=True, exist_ok=True)
    for row in range(rows):
        for col in range(cols):
            image = rng.integers(30, 110, size=(size, size, 3), dtype=np.uint8)
            mask = np.zeros((size, size), dtype=np.uint8)
            for _ in range(int(rng.integers(1, 4))):
                y, x = rng.integers(0, size - size // 4, size=2)
                h, w = rng.integers(size // 8, size // 4 + 1, size=2)
                mask[y:y + h, x:x + w] = 1
            image[mask == 1] = rng.integers(190, 250, size=3, dtype=np.uint8)
            name = f"{ZOOM}-{ORIGIN[0] + col}-{ORIGIN[1] + row}.png"
            Image.fromarray(image).save(root / "chips" / name)
            if with_masks:
                Image.fromarray(mask * mask_scale).save(root / "labels" / name)
    return root
