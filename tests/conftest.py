"""Shared fixtures: the real Kampala sample, loopback tile/Overpass servers, a tiny trained model.

Tests that need ../shared/data/kampala skip with a reason when it is absent; with
CAMP_REQUIRE_SAMPLE_DATA=1 (set by .ci/run) that skip becomes a failure.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLBACKEND", "Agg")

from servers import OverpassServer, TileServer  # noqa: E402

SHARED = Path(os.environ.get("CAMP_SHARED_DIR", ROOT.parent / "shared")).resolve()
KAMPALA = SHARED / "data" / "kampala"
SCHEMAS = SHARED / "schemas"
ESRI_EXAMPLES = SHARED / "data" / "esri_examples"


def require_shared(path: Path, what: str) -> Path:
    """Skip (or fail under CAMP_REQUIRE_SAMPLE_DATA=1) when a ../shared resource is absent."""
    if path.exists():
        return path
    reason = f"{what} not found at {path} (set CAMP_SHARED_DIR or check out ../shared beside the repo)"
    if os.environ.get("CAMP_REQUIRE_SAMPLE_DATA") == "1":
        pytest.fail(reason + "; CAMP_REQUIRE_SAMPLE_DATA=1 forbids skipping")
    pytest.skip(reason)


@dataclass(frozen=True)
class KampalaSample:
    """The real sample: 96 OpenAerialMap tiles at zoom 21 (12 x 8) and 108 OSM footprints."""

    root: Path
    tiles_dir: Path
    labels: Path
    zoom: int
    tiles: tuple  # tuple[trainer.tiling.Tile, ...]
    bbox: tuple[float, float, float, float]  # lon/lat, a hair inside the block's outer tile edges

    @property
    def file_template(self) -> str:
        return self.tiles_dir.as_uri() + "/{z}/{x}/{y}.png"


@pytest.fixture(scope="session")
def kampala() -> KampalaSample:
    root = require_shared(KAMPALA, "the Kampala sample data")
    from trainer.tiling import Tile

    zoom = 21
    tiles = tuple(sorted(Tile(int(p.parent.name), int(p.stem), zoom)
                         for p in (root / "tiles" / str(zoom)).glob("*/*.png")))
    xs = [t.x for t in tiles]
    ys = [t.y for t in tiles]
    nw = Tile(min(xs), min(ys), zoom).bounds_lonlat
    se = Tile(max(xs), max(ys), zoom).bounds_lonlat
    eps = 1e-7
    bbox = (nw[0] + eps, se[1] + eps, se[2] - eps, nw[3] - eps)
    return KampalaSample(root, root / "tiles", root / "labels.geojson", zoom, tiles, bbox)


@pytest.fixture(scope="session")
def schema_dir() -> Path:
    return require_shared(SCHEMAS, "the STAC extension schemas")


@pytest.fixture(scope="session")
def esri_examples() -> Path:
    return require_shared(ESRI_EXAMPLES, "the ArcGIS example files")


@pytest.fixture
def tile_server(kampala: KampalaSample):
    """An XYZ server on 127.0.0.1 over the Kampala tiles (fresh per test: counts and faults)."""
    with TileServer(kampala.tiles_dir) as server:
        yield server


@pytest.fixture
def overpass_server(kampala: KampalaSample):
    """An Overpass API on 127.0.0.1 answering from the Kampala labels.geojson."""
    with OverpassServer(kampala.labels) as server:
        yield server


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    """Keep tile caches and MLflow stores out of the user's home and the working directory."""
    monkeypatch.setenv("CAMP_CACHE_DIR", str(tmp_path_factory.mktemp("tile-cache")))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def kampala_dataset(kampala: KampalaSample, tmp_path_factory) -> Path:
    """The Kampala block fetched once per session with `camp fetch` from file:// tiles + labels file."""
    from trainer.config import FetchConfig
    from trainer.jobs import run_job

    out = tmp_path_factory.mktemp("kampala") / "dataset"
    cache = tmp_path_factory.mktemp("kampala-cache")
    run_job("fetch", FetchConfig(bbox=kampala.bbox, zoom=kampala.zoom, imagery=kampala.file_template,
                                 labels=str(kampala.labels), out=out, cache_dir=cache))
    return out


@pytest.fixture(scope="session")
def trained_run(kampala_dataset: Path, tmp_path_factory) -> Path:
    """A small U-Net trained once per session on the real Kampala chips (a few epochs, CPU).

    Good enough to find buildings (tests assert IoU well above chance), small enough to train in
    about a minute. Holds every artifact: best_model.pth/.pt/.onnx/.dlpk, stac_item.json,
    model_card.json.
    """
    from trainer.config import TrainConfig
    from trainer.jobs import run_job

    base = tmp_path_factory.mktemp("trained")
    run = base / "run"
    run_job("train", TrainConfig(data=kampala_dataset, out=run, epochs=8, batch_size=8,
                                 base_channels=8, depth=3, accelerator="cpu", devices="1",
                                 tracking_uri=f"sqlite:///{base / 'mlflow.db'}", seed=7))
    return run
