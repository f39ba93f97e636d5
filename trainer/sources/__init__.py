"""Imagery and label sources: where the pixels and the polygons of a dataset come from.

Imagery: an XYZ/TMS URL template (:mod:`.xyz`, http(s) or ``file://``) or a local raster
(:mod:`.raster`, any CRS, warped onto the chip grid). Both hand back :class:`ChipImage` values:
RGB uint8 pixels on the EPSG:3857 tile grid plus a validity mask (alpha 0 / nodata -> invalid).

Labels: OpenStreetMap through Overpass (:mod:`.overpass`) or a local vector file
(:mod:`.vector`). Both hand back shapely polygons in lon/lat (EPSG:4326); projecting them onto a
chip is :mod:`trainer.chips`' job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import __version__

if TYPE_CHECKING:
    import numpy as np
    import requests

REPOSITORY_URL = "https://github.com/camp-mapper/camp-mapper"
# Tile and Overpass operators ask clients to identify themselves honestly (OSM tile usage policy).
USER_AGENT = f"camp-mapper/{__version__} (+{REPOSITORY_URL})"

OFFLINE_EXAMPLE = (
    "camp fetch ... --imagery 'file:///path/to/tiles/{z}/{x}/{y}.png' --labels labels.geojson"
)


@dataclass(frozen=True)
class ChipImage:
    """Pixels of one chip: ``rgb`` uint8 (3, H, W) and ``valid`` bool (H, W), False where nodata."""

    rgb: np.ndarray
    valid: np.ndarray

    @property
    def has_data(self) -> bool:
        return bool(self.valid.any())


def new_session(workers: int = 8) -> requests.Session:
    """A requests.Session with our User-Agent and a connection pool sized for ``workers`` threads."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(workers, 4), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def retry_delay(attempt: int, retry_after: str | None, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): the server's Retry-After when it gives
    one in seconds, else exponential backoff ``base * 2**attempt``, both capped at ``cap``."""
    if retry_after is not None:
        try:
            return max(0.0, min(cap, float(retry_after)))
        except ValueError:
            pass  # an HTTP date: fall back to our own backoff rather than parse clocks
    return min(cap, base * (2 ** attempt))
