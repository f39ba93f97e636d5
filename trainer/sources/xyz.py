"""Imagery from an XYZ/TMS URL template, over http(s) or ``file://`` (a folder of tiles).

Downloads run in a bounded thread pool on one ``requests.Session`` (keep-alive), with retries and
backoff on timeouts, 429 and 5xx (honouring ``Retry-After``), and an on-disk cache keyed by the
template's hash and z/x/y, so fetching the same extent again downloads nothing. Problems with one
tile (404, corrupt bytes, exhausted retries) are outcomes, not exceptions: the caller counts and
reports them and decides when they are fatal.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..errors import TileFetchError
from ..tiling import TILE_SIZE, Tile, format_tile_url
from . import OFFLINE_EXAMPLE, ChipImage, new_session, retry_delay

if TYPE_CHECKING:
    import requests

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# Give up after this many tiles failed to connect while none succeeded: the server is down.
UNREACHABLE_AFTER = 3

Status = Literal["downloaded", "cached", "read", "missing", "failed"]


@dataclass(frozen=True)
class TileOutcome:
    """What became of one tile: ``image`` is set for downloaded/cached/read tiles."""

    tile: Tile
    status: Status
    image: ChipImage | None = None
    reason: str = ""
    unreachable: bool = False


def default_cache_dir() -> Path:
    env = os.environ.get("CAMP_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "camp" / "tiles"


def decode_tile(data: bytes, size: int = TILE_SIZE) -> ChipImage:
    """Decode PNG/JPEG/WebP bytes into RGB + validity (alpha 0 -> invalid); resize to ``size``.

    Raises ValueError with a short description of what the bytes were instead.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            img = img.convert("RGBA" if has_alpha else "RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"not a PNG/JPEG/WebP image ({len(data)} bytes starting {data[:16]!r}): {exc}") from None
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)  # e.g. 512 px "retina" tiles
    pixels = np.asarray(img)
    rgb = np.ascontiguousarray(pixels[..., :3].transpose(2, 0, 1))
    valid = pixels[..., 3] > 0 if has_alpha else np.ones((size, size), dtype=bool)
    return ChipImage(rgb=rgb, valid=valid)


def template_root(template: str) -> str:
    """The fixed part of a template before its first placeholder (for messages and checks)."""
    return template.split("{", 1)[0]


def file_url_to_path(url: str) -> Path:
    return Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))


def offline_hint(template: str) -> str:
    return (f"cannot reach the tile server {template_root(template)!r}. Check the network or "
            f"proxy, or work offline with a folder of tiles and a labels file: {OFFLINE_EXAMPLE}")


class XyzSource:
    """Reads tiles of one template. Thread-safe; ``fetch`` runs ``workers`` downloads at a time."""

    def __init__(self, template: str, *, workers: int = 8, retries: int = 4, timeout: float = 30.0,
                 cache_dir: Path | None = None, backoff: float = 0.5,
                 session: requests.Session | None = None) -> None:
        self.template = template
        self.workers = workers
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self.is_file = template.lower().startswith("file://")
        key = hashlib.sha256(template.encode()).hexdigest()[:16]
        # Local tiles need no cache: reading them again is as cheap as reading a cached copy.
        self.cache = None if self.is_file else (cache_dir or default_cache_dir()) / key
        self._session = session
        self._session_lock = threading.Lock()

    @property
    def session(self) -> requests.Session:
        with self._session_lock:
            if self._session is None:
                self._session = new_session(self.workers)
            return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    # ------------------------------------------------------------------ one tile

    def read_tile(self, tile: Tile) -> TileOutcome:
        if self.is_file:
            return self._read_file(tile)
        cached = self._cache_path(tile)
        if cached.is_file():
            try:
                return TileOutcome(tile, "cached", decode_tile(cached.read_bytes()))
            except ValueError:
                cached.unlink(missing_ok=True)  # a damaged cache entry: fetch it again
        return self._download(tile)

    def _read_file(self, tile: Tile) -> TileOutcome:
        path = file_url_to_path(format_tile_url(self.template, tile))
        if not path.is_file():
            return TileOutcome(tile, "missing", reason=f"no file {path}")
        try:
            return TileOutcome(tile, "read", decode_tile(path.read_bytes()))
        except ValueError as exc:
            return TileOutcome(tile, "failed", reason=f"{path}: {exc}")

    def _download(self, tile: Tile) -> TileOutcome:
        import requests

        url = format_tile_url(self.template, tile)
        reason = ""
        for attempt in range(self.retries + 1):
            retry_after = None
            try:
                response = self.session.get(url, timeout=self.timeout)
            except requests.exceptions.ConnectionError as exc:
                if isinstance(exc, requests.exceptions.ConnectTimeout) or attempt >= 1:
                    # A refused or unresolvable host rarely recovers within seconds: one retry only.
                    return TileOutcome(tile, "failed", reason=f"{url}: cannot connect ({exc.__class__.__name__})",
                                       unreachable=True)
                reason = f"{url}: connection error"
            except requests.exceptions.Timeout:
                reason = f"{url}: no answer within {self.timeout:g} s"
            except requests.exceptions.RequestException as exc:
                return TileOutcome(tile, "failed", reason=f"{url}: {exc}")
            else:
                if response.status_code == 200:
                    return self._accept(tile, url, response.content)
                if response.status_code in (404, 204, 410):
                    return TileOutcome(tile, "missing", reason=f"{url}: HTTP {response.status_code}")
                if response.status_code not in RETRY_STATUS:
                    return TileOutcome(tile, "failed", reason=f"{url}: HTTP {response.status_code}")
                reason = f"{url}: HTTP {response.status_code}"
                retry_after = response.headers.get("Retry-After")
            if attempt < self.retries:
                time.sleep(retry_delay(attempt, retry_after, self.backoff))
        return TileOutcome(tile, "failed", reason=f"{reason} (after {self.retries} retries)")

    def _accept(self, tile: Tile, url: str, data: bytes) -> TileOutcome:
        try:
            image = decode_tile(data)
        except ValueError as exc:
            return TileOutcome(tile, "failed", reason=f"{url}: {exc}")
        self._store(tile, data)
        return TileOutcome(tile, "downloaded", image)

    def is_cached(self, tile: Tile) -> bool:
        return self.cache is not None and self._cache_path(tile).is_file()

    def _cache_path(self, tile: Tile) -> Path:
        assert self.cache is not None
        return self.cache / str(tile.z) / str(tile.x) / f"{tile.y}.tile"

    def _store(self, tile: Tile, data: bytes) -> None:
        path = self._cache_path(tile)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError:
            pass  # a cache we cannot write only costs a download next time

    # ------------------------------------------------------------------ many tiles

    def fetch(self, tiles: Iterable[Tile]) -> Iterator[TileOutcome]:
        """Yield one outcome per tile as downloads complete, at most ``workers`` in flight.

        Raises :class:`TileFetchError` early when the server is unreachable. Closing the iterator
        (e.g. on cancel) drops the tiles not yet started and returns without waiting for the
        downloads under way (they finish in the background; a cache write is atomic).
        """
        pending_tiles = iter(tiles)
        connect_failures = successes = 0
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="camp-tile")
        in_flight: set[Future[TileOutcome]] = set()
        try:
            while True:
                # Keep the queue short so a cancel stops quickly and memory stays bounded.
                while len(in_flight) < 2 * self.workers:
                    tile = next(pending_tiles, None)
                    if tile is None:
                        break
                    in_flight.add(pool.submit(self.read_tile, tile))
                if not in_flight:
                    return
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    outcome = future.result()
                    successes += outcome.image is not None or outcome.status == "missing"
                    connect_failures += outcome.unreachable
                    if connect_failures >= UNREACHABLE_AFTER and not successes:
                        raise TileFetchError(offline_hint(self.template))
                    yield outcome
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
