"""Real HTTP servers on 127.0.0.1 for tests and benchmarks: an XYZ tile server over a folder and an
Overpass API answering from a GeoJSON file. Both can inject faults (errors, stalls, garbage)."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from shapely.geometry import box, mapping, shape


@dataclass
class Faults:
    """Fault injection, shared with the handler threads. Keys are request paths (or '*')."""

    fail_first: dict[str, int] = field(default_factory=dict)  # path -> answer 503 this many times
    fail_status: int = 503  # the status of those first failures (429 to test rate limiting)
    retry_after: str = "0"  # their Retry-After header ("" for none)
    status: dict[str, int] = field(default_factory=dict)  # path -> always answer this status
    stall_seconds: dict[str, float] = field(default_factory=dict)  # path -> sleep before answering
    garbage: set[str] = field(default_factory=set)  # paths answered with non-image bytes (200)
    error_every: int = 0  # answer 500 to every Nth request (0: never)
    remark: str | None = None  # Overpass: answer 200 with this runtime-error remark
    delay_seconds: float = 0.0  # added latency per request (to emulate a remote server)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that drop a keep-alive connection (a preflight GET closed unread, a timed-out
        # request) are normal here; keep the test output free of their tracebacks.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class LoopbackServer:
    """Base: a ThreadingHTTPServer on 127.0.0.1 with request counting and fault injection."""

    def __init__(self) -> None:
        self.faults = Faults()
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer._dispatch(self, None)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                outer._dispatch(self, self.rfile.read(length))

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # A short poll interval makes shutdown() (every fixture teardown) take ~0.05 s, not 0.5 s.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _dispatch(self, handler: BaseHTTPRequestHandler, body: bytes | None) -> None:
        path = urllib.parse.urlsplit(handler.path).path
        with self._lock:
            self.requests[path] += 1
            count = self.requests[path]
            total = sum(self.requests.values())
        f = self.faults
        if f.delay_seconds:
            time.sleep(f.delay_seconds)
        stall = f.stall_seconds.get(path, f.stall_seconds.get("*", 0.0))
        if stall and count == 1:
            time.sleep(stall)
        status = f.status.get(path, f.status.get("*"))
        if status:
            return self._send(handler, status, b"injected error", "text/plain")
        if count <= f.fail_first.get(path, f.fail_first.get("*", 0)):
            headers = {"Retry-After": f.retry_after} if f.retry_after else {}
            return self._send(handler, f.fail_status, b"try again", "text/plain", headers)
        if f.error_every and total % f.error_every == 0:
            return self._send(handler, 500, b"flaky", "text/plain")
        if path in f.garbage or "*" in f.garbage:
            return self._send(handler, 200, b"<html>not an image</html>", "image/png")
        self.handle(handler, path, body)

    def handle(self, handler: BaseHTTPRequestHandler, path: str, body: bytes | None) -> None:
        raise NotImplementedError

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                handler.send_header(k, v)
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass


class TileServer(LoopbackServer):
    """Serves ``root/{z}/{x}/{y}.<ext>`` at ``/{z}/{x}/{y}.<ext>``; 404 for missing tiles.

    ``template`` is the XYZ URL template for the product (``http://127.0.0.1:P/{z}/{x}/{y}.png``).
    """

    def __init__(self, root: Path, ext: str = "png") -> None:
        super().__init__()
        self.root = Path(root)
        self.ext = ext
        self.template = f"{self.url}/{{z}}/{{x}}/{{y}}.{ext}"
        self.user_agents: Counter[str] = Counter()

    def handle(self, handler: BaseHTTPRequestHandler, path: str, body: bytes | None) -> None:
        self.user_agents[handler.headers.get("User-Agent", "")] += 1
        file = (self.root / path.lstrip("/")).resolve()
        if self.root.resolve() not in file.parents or not file.is_file():
            return self._send(handler, 404, b"no such tile", "text/plain")
        content_type = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
                        "webp": "image/webp"}.get(file.suffix.lstrip("."), "application/octet-stream")
        self._send(handler, 200, file.read_bytes(), content_type)

    @property
    def tile_requests(self) -> int:
        return sum(n for p, n in self.requests.items() if p.count("/") >= 3)


class OverpassServer(LoopbackServer):
    """Answers Overpass QL queries (``data=`` by POST or GET) from a GeoJSON file.

    It reads the bbox of the query (``(s,w,n,e)`` filters or a ``[bbox:...]`` setting) and returns
    the polygons intersecting it in ``out geom`` form: simple polygons as closed ways, polygons with
    holes and multipolygons as ``type=multipolygon`` relations with outer/inner members, as the real
    Overpass API does. Queries are kept in ``queries`` for assertions.
    """

    def __init__(self, geojson: Path, tags: dict[str, str] | None = None) -> None:
        super().__init__()
        data = json.loads(Path(geojson).read_text())
        self.features = [shape(f["geometry"]) for f in data["features"] if f.get("geometry")]
        self.tags = tags or {"building": "yes"}
        self.queries: list[str] = []
        self.interpreter_url = f"{self.url}/api/interpreter"

    def handle(self, handler: BaseHTTPRequestHandler, path: str, body: bytes | None) -> None:
        if body is not None:
            query = urllib.parse.parse_qs(body.decode()).get("data", [body.decode()])[0]
        else:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(handler.path).query).get("data", [""])[0]
        self.queries.append(query)
        if self.faults.remark:
            payload = {"version": 0.6, "generator": "Overpass API (test)", "elements": [],
                       "remark": self.faults.remark}
            return self._send(handler, 200, json.dumps(payload).encode(), "application/json")
        match = re.search(r"\(\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\)", query) \
            or re.search(r"\[bbox:\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\]", query)
        if not match:
            return self._send(handler, 400, b"Error: no bbox in query", "text/plain")
        s, w, n, e = (float(v) for v in match.groups())
        area = box(w, s, e, n)
        elements: list[dict[str, Any]] = []
        next_id = 1
        for geom in self.features:
            if not geom.intersects(area):
                continue
            polygons = list(getattr(geom, "geoms", [geom]))
            if len(polygons) == 1 and not polygons[0].interiors:
                elements.append({"type": "way", "id": next_id, "tags": dict(self.tags),
                                 "geometry": _ring(polygons[0].exterior.coords)})
                next_id += 1
                continue
            members = []
            for poly in polygons:
                members.append({"type": "way", "ref": next_id, "role": "outer",
                                "geometry": _ring(poly.exterior.coords)})
                next_id += 1
                for hole in poly.interiors:
                    members.append({"type": "way", "ref": next_id, "role": "inner",
                                    "geometry": _ring(hole.coords)})
                    next_id += 1
            elements.append({"type": "relation", "id": next_id, "members": members,
                             "tags": {"type": "multipolygon", **self.tags}})
            next_id += 1
        payload = {"version": 0.6, "generator": "Overpass API (test)", "elements": elements}
        self._send(handler, 200, json.dumps(payload).encode(), "application/json")


def _ring(coords: Any) -> list[dict[str, float]]:
    return [{"lat": y, "lon": x} for x, y, *_ in coords]


def geojson_of(polygons: list[Any]) -> dict[str, Any]:
    return {"type": "FeatureCollection",
            "features": [{"type": "Feature", "properties": {}, "geometry": mapping(p)} for p in polygons]}
