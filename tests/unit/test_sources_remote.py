"""STAC APIs over real HTTP on 127.0.0.1: timeouts, transient-only retries, asset hrefs constrained.

A server that accepts and never answers must give a clear failure within a minute (reliability
§5 S6: seconds to fail on a silent server ≤ 60); a STAC API whose items name ``/vsi…`` paths, files
or other schemes is refused with the item and asset named.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prefect.states import Failed
from rasterio.transform import from_origin
from shapely.geometry import box, mapping

from core.errors import SourceError
from flows.outcomes import retry_condition
from tasks.grid import GridSpec
from tasks.preprocess import read_dem
from tasks.sources import REMOTE_TIMEOUT_S, StacApiSource, TransientSourceError, source_from_uri
from tests.helpers import servers

AOI = box(78.0, 42.0, 78.1, 42.1)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A host on 127.0.0.1 that accepts connections and never sends a byte."""
    with servers.silent_server() as url:
        yield url


@pytest.mark.slow  # two read timeouts of 20 s each
def test_a_silent_stac_api_fails_clearly_within_a_minute(silent_server: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError, match=r"no answer within 20 s") as err:
        StacApiSource(silent_server).search(AOI, date(2024, 7, 1), date(2024, 7, 31), ["S2L2A"])
    seconds = time.perf_counter() - t0
    assert f"stac:{silent_server}" in str(err.value)
    assert seconds <= 60, f"{seconds:.1f} s to fail on a silent server"
    print(f"silent STAC API: failed in {seconds:.1f} s (read timeout {REMOTE_TIMEOUT_S[1]:g} s)")
    # The check the CLI runs before any flow: the same silence is bad input, one line, exit 2.
    with pytest.raises(SourceError, match="no answer"):
        source_from_uri(f"stac:{silent_server}")


@pytest.mark.slow  # one read timeout of 20 s
def test_a_silent_asset_server_fails_the_read_within_a_minute(silent_server: str) -> None:
    grid = GridSpec(epsg=32644, transform=tuple(from_origin(500_000, 4_650_000, 10, 10))[:6], width=8, height=8)
    t0 = time.perf_counter()
    with pytest.raises(OSError, match="remote read failed") as err:
        read_dem(f"{silent_server}/dem.tif", grid)
    seconds = time.perf_counter() - t0
    assert f"{silent_server}/dem.tif" in str(err.value)
    assert seconds <= 60, f"{seconds:.1f} s to fail on a silent asset server"
    print(f"silent asset server: failed in {seconds:.1f} s")


def test_search_retries_only_transient_failures() -> None:
    def retried(exc: Exception) -> bool:
        return retry_condition(None, None, Failed(data=exc))

    assert retried(TransientSourceError("stac:x: 503"))
    assert not retried(SourceError("stac:x: bad item"))
    assert not retried(TimeoutError("stac:x: no answer within 20 s"))
    assert not retried(ValueError("a bug"))


class _Stac(BaseHTTPRequestHandler):
    """A minimal STAC API: landing page, and one S2 item per search with the configured href."""

    href = "https://example.org/B02.tif"
    status = 200

    def log_message(self, *args: Any) -> None:
        return

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def do_GET(self) -> None:
        if self.path.startswith("/search"):
            return self._search()
        base = self._base()
        self._send(
            200,
            {
                "type": "Catalog",
                "id": "test",
                "stac_version": "1.0.0",
                "description": "test",
                "conformsTo": [
                    "https://api.stacspec.org/v1.0.0/core",
                    "https://api.stacspec.org/v1.0.0/item-search",
                ],
                "links": [
                    {"rel": "self", "href": base + "/"},
                    {"rel": "root", "href": base + "/"},
                    {"rel": "search", "href": base + "/search", "method": "GET"},
                    {"rel": "search", "href": base + "/search", "method": "POST"},
                ],
            },
        )

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self._search(body.get("collections", []))

    def _search(self, collections: list[str] | None = None) -> None:
        if self.status != 200:
            return self._send(self.status, {"code": "busy", "description": "try later"})
        if collections is None:
            collections = ["sentinel-2-l2a"] if "sentinel-2-l2a" in self.path else []
        features = []
        if "sentinel-2-l2a" in collections:
            features.append(
                {
                    "type": "Feature",
                    "stac_version": "1.0.0",
                    "id": "S2A_REMOTE",
                    "collection": "sentinel-2-l2a",
                    "geometry": mapping(AOI),
                    "bbox": list(AOI.bounds),
                    "properties": {"datetime": "2024-07-04T05:56:41Z", "updated": "2024-07-05T00:00:00Z"},
                    "assets": {"B02": {"href": self.href}},
                    "links": [],
                }
            )
        self._send(200, {"type": "FeatureCollection", "features": features, "links": []})


@pytest.fixture
def stac_api() -> Iterator[tuple[str, type[_Stac]]]:
    handler = type("Handler", (_Stac,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", handler
    server.shutdown()
    server.server_close()


BAD_REMOTE_HREFS = [
    "/vsicurl/https://example.org/B02.tif",
    "/etc/passwd",
    "file:///etc/passwd",
    "s3://bucket/B02.tif",
    "zip+https://example.org/a.zip!/B02.tif",
]


def test_a_stac_api_with_bad_hrefs_is_refused_naming_the_item(stac_api: tuple[str, type[_Stac]]) -> None:
    url, handler = stac_api
    window = (AOI, date(2024, 7, 1), date(2024, 7, 31), ["S2L2A"])
    (good,) = StacApiSource(url).search(*window)
    assert good.asset("B02") == "https://example.org/B02.tif" and good.fingerprint
    accepted = []
    for href in BAD_REMOTE_HREFS:
        handler.href = href
        try:
            StacApiSource(url).search(*window)
            accepted.append(href)
        except SourceError as exc:
            assert "'S2A_REMOTE'" in str(exc) and "'B02'" in str(exc), str(exc)
    assert accepted == [], f"inputs accepted: {len(accepted)} of {len(BAD_REMOTE_HREFS)}"
    handler.href = "s3://bucket/B02.tif"
    (s3,) = StacApiSource(url, allow_s3=True).search(*window)
    assert s3.asset("B02") == "s3://bucket/B02.tif"


def test_a_busy_stac_api_is_a_transient_failure(stac_api: tuple[str, type[_Stac]]) -> None:
    url, handler = stac_api
    handler.status = 503
    with pytest.raises(TransientSourceError, match="stac:"):
        StacApiSource(url).search(AOI, date(2024, 7, 1), date(2024, 7, 31), ["S2L2A"])
