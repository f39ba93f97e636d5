"""Read a training dataset folder, whatever wrote it, into one list of samples.

Layouts (:func:`discover` tells them apart):

- ``camp``: our fetch folder (``manifest.json``, ``chips/Z-X-Y.tif``, ``labels/Z-X-Y.tif``);
- ``esri``: ArcGIS Classified Tiles (``map.txt``, ``images/``, ``labels/``; see
  :mod:`trainer.esri_tiles` for which class values count as positive);
- ``folders``: a plain pair of folders, images in ``chips/``, ``images/`` or ``image/`` and masks in
  ``labels/``, ``masks/``, ``mask/`` or ``label/`` (PNG/JPEG/TIFF), paired by file stem (fAIr-style
  ``OAM-x-y-z`` names give the tile).

Masks: :func:`load_mask` returns {0,1}. With ``positive`` (class values) a pixel is 1 when its
value is one of them. Without it, 0/1 masks are used as they are and masks with larger values
(0/255, possibly JPEG-noisy) are thresholded at 128.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetError, InputError
from .tiling import Tile, ground_resolution

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".webp")
IMAGE_DIRS = ("chips", "images", "image", "imgs")
MASK_DIRS = ("labels", "masks", "mask", "label")


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path | None
    tile: Tile | None
    bounds: tuple | None  # EPSG:3857 (left, bottom, right, top) when known


@dataclass(frozen=True)
class Dataset:
    root: Path
    layout: str  # "camp" | "esri" | "folders"
    samples: tuple[Sample, ...]
    resolution_m: float | None
    zoom: int | None
    bbox_lonlat: tuple | None
    # Class values that mean "structure" (pass to load_mask); None: the default rule above.
    positive_values: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.samples)


def discover(path: str | Path) -> Dataset:
    """Find the layout of ``path`` and list its samples; :class:`DatasetError` says what is wrong."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; fetch one with `camp fetch ... --out {root}`")
    if (root / "map.txt").is_file():
        dataset = _esri(root)
    elif (root / "manifest.json").is_file():
        dataset = _camp(root)
    else:
        dataset = _folders(root)
    _check(dataset)
    return dataset


# ---------------------------------------------------------------------------- layouts

def _camp(root: Path) -> Dataset:
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        samples = tuple(
            Sample(root / c["image"], root / c["mask"], Tile(c["tile"]["x"], c["tile"]["y"], c["tile"]["z"]),
                   tuple(c["bounds_3857"]))
            for c in manifest["chips"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{root / 'manifest.json'} is not a camp fetch manifest ({exc!r}); "
                           "fetch the dataset again or remove the manifest") from None
    return Dataset(root, "camp", samples, manifest.get("resolution_m"), manifest.get("zoom"),
                   tuple(manifest["bbox_lonlat"]) if manifest.get("bbox_lonlat") else None)


def _esri(root: Path) -> Dataset:
    from .esri_tiles import read_classified_tiles

    tiles = read_classified_tiles(root)
    manifest = _manifest_tiles(root)
    samples = tuple(Sample(image, mask, *manifest.get(image.name, (None, None))) for image, mask in tiles.pairs)
    resolution, zoom, bbox = _grid_facts(samples)
    if resolution is None and samples:
        resolution = _geotiff_resolution(samples[0].image)
    return Dataset(root, "esri", samples, resolution, zoom, bbox, tiles.positive_values)


def _manifest_tiles(root: Path) -> dict[str, tuple[Tile, tuple]]:
    """Tile and bounds per image name from our manifest, when we wrote the Esri folder."""
    path = root / "manifest.json"
    if not path.is_file():
        return {}
    chips = json.loads(path.read_text(encoding="utf-8")).get("chips", [])
    return {Path(c["image"]).name: (Tile(c["tile"]["x"], c["tile"]["y"], c["tile"]["z"]), tuple(c["bounds_3857"]))
            for c in chips}


def _folders(root: Path) -> Dataset:
    image_dir = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), None)
    mask_dir = next((root / d for d in MASK_DIRS if (root / d).is_dir()), None)
    if image_dir is None:
        raise DatasetError(f"no images in {root}: expected manifest.json (camp fetch), map.txt (ArcGIS "
                           f"Classified Tiles) or an image folder named one of {', '.join(IMAGE_DIRS)}")
    masks = {p.stem: p for p in _images_in(mask_dir)} if mask_dir else {}
    samples = []
    for image in _images_in(image_dir):
        tile = _tile_of(image.stem)
        samples.append(Sample(image, masks.get(image.stem), tile, tile.bounds_3857 if tile else None))
    resolution, zoom, bbox = _grid_facts(samples)
    return Dataset(root, "folders", tuple(samples), resolution, zoom, bbox)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _tile_of(stem: str) -> Tile | None:
    try:
        return Tile.parse(stem)
    except InputError:
        return None


def _grid_facts(samples: Iterable[Sample]) -> tuple[float | None, int | None, tuple | None]:
    """Resolution, zoom and lon/lat extent from the samples' tiles (when all share one zoom)."""
    tiles = [s.tile for s in samples if s.tile is not None]
    if not tiles or len({t.z for t in tiles}) != 1:
        return None, None, None
    bounds = [t.bounds_lonlat for t in tiles]
    bbox = (min(b[0] for b in bounds), min(b[1] for b in bounds), max(b[2] for b in bounds), max(b[3] for b in bounds))
    return ground_resolution((bbox[1] + bbox[3]) / 2, tiles[0].z), tiles[0].z, bbox


def _geotiff_resolution(path: Path) -> float | None:
    """Ground metres per pixel of a georeferenced chip (Web Mercator scaled by cos(lat))."""
    import math

    import rasterio
    from rasterio.warp import transform

    try:
        with rasterio.open(path) as src:
            if src.crs is None or not src.crs.is_projected:
                return None
            size = abs(src.transform.a)
            if src.crs.to_epsg() == 3857:
                x, y = src.xy(src.height // 2, src.width // 2)
                _, (lat,) = transform(src.crs, "EPSG:4326", [x], [y])
                size *= math.cos(math.radians(lat))
            return size
    except rasterio.errors.RasterioIOError:
        return None


# ---------------------------------------------------------------------------- checks

def _check(dataset: Dataset) -> None:
    if not dataset.samples:
        raise DatasetError(f"no images in {dataset.root} ({dataset.layout} layout); fetch some with camp fetch")
    missing = [s for s in dataset.samples if s.mask is None or not s.mask.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} of {len(dataset.samples)} images in {dataset.root} have no mask "
                           f"(e.g. {missing[0].image.name}); masks must have the same file stem in the labels folder")
    absent = [s for s in dataset.samples if not s.image.is_file()]
    if absent:
        raise DatasetError(f"{len(absent)} images listed in {dataset.root} are missing (e.g. {absent[0].image})")
    for sample in dataset.samples:
        image_size, mask_size = image_shape(sample.image), image_shape(sample.mask)  # type: ignore[arg-type]
        if image_size != mask_size:
            raise DatasetError(f"mask {sample.mask} is {mask_size[1]}x{mask_size[0]} px but its image "
                               f"{sample.image.name} is {image_size[1]}x{image_size[0]}; masks must match their image")


def image_shape(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding pixels."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        with rasterio.open(path) as src:
            return src.height, src.width
    from PIL import Image

    with Image.open(path) as img:
        return img.height, img.width


# ---------------------------------------------------------------------------- pixels

def load_image(path: str | Path) -> np.ndarray:
    """uint8 (3, H, W): RGB bands (alpha dropped, grey repeated)."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import rasterio

            with rasterio.open(path) as src:
                if src.dtypes[0] != "uint8":
                    raise DatasetError(f"image {path} is {src.dtypes[0]}; chips must be 8-bit")
                pixels = src.read([1, 2, 3] if src.count >= 3 else [1, 1, 1])
        else:
            from PIL import Image

            with Image.open(path) as img:
                pixels = np.asarray(img.convert("RGB")).transpose(2, 0, 1)
    except (OSError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"cannot read image {path}: {exc}") from None
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def load_mask(path: str | Path, positive: Iterable[int] | None = None) -> np.ndarray:
    """uint8 (H, W) in {0, 1}; see the module docstring for how values map to 1."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import rasterio

            with rasterio.open(path) as src:
                values = src.read(1)
        else:
            from PIL import Image

            with Image.open(path) as img:
                values = np.asarray(img.convert("L") if img.mode not in ("L", "P", "1", "I") else img)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read mask {path}: {exc}") from None
    if positive is not None:
        return np.isin(values, list(positive)).astype(np.uint8)
    if values.max(initial=0) <= 1:
        return (values > 0).astype(np.uint8)
    return (values >= 128).astype(np.uint8)
