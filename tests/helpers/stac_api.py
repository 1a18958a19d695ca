"""A loopback STAC API (real HTTP on 127.0.0.1) re-serving a demo catalog in each public catalog's spelling.

One server holds three APIs, one per layout, at ``/earth-search-v1/``, ``/planetary-computer/`` and
``/cdse/``; each implements the landing page (with ``conformsTo``), ``/conformance``,
``/collections`` and ``/search`` (POST and GET, ``limit`` honoured up to :data:`MAX_PAGE`, ``next``
links to page on, ``collections`` / ``intersects`` / ``bbox`` / ``datetime`` filters).

Items are the demo generator's, rewritten into each catalog's spelling, starting from the real
items in ``realdata/stac_items`` (their properties and asset fields are kept as a template; id,
time, geometry, platform, baseline and the asset's raster fields come from the demo item):

* Earth Search v1: common-name asset keys (``blue`` … ``scl``), ``s2:processing_baseline``,
  ``earthsearch:boa_offset_applied``, ``raster:bands`` scale/offset; COGs at ``/files/plain/…``.
* Planetary Computer: ``B01`` … ``SCL``, ``sentinel-1-rtc`` and ``cop-dem-glo-30``; COGs at
  ``/files/signed/…``, refused (403) without the SAS token of ``/api/sas/v1/token/{collection}``.
* Copernicus Data Space: ``B02_10m`` … ``SCL_20m``, ``processing:version``, ``raster:scale`` /
  ``raster:offset`` on the asset; ``s3://eodata/…`` hrefs served path-style at ``/eodata/…`` to
  GDAL requests signed with :data:`S3_KEY_ID` (an S3 endpoint on plain HTTP).

COGs are served with HTTP range requests (206), so GDAL reads them block by block. Faults are
switched on per test: ``search_429`` (answers of 429 + ``Retry-After: 1`` before the next
search), ``file_503`` (asset paths answered 503 once), ``token_ttl_s`` (token lifetime).
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from shapely.geometry import box, shape

from tasks.catalogs import CATALOGS

LAYOUTS = ("earth-search-v1", "planetary-computer", "cdse")
MAX_PAGE = 2
"""Most items on one page, whatever ``limit`` asks: a demo search spans several pages."""
SAS_SIG = "loopbacksig"
"""The ``sig`` value of every token the server issues (what signed asset GETs must carry)."""
S3_KEY_ID = "AKIALOOPBACKTEST"
"""The S3 access key the ``/eodata/`` endpoint accepts."""
S3_SECRET = "loopback-secret-value-3f9c2e"
"""A secret to look for in logs and flow parameters (it must never appear there)."""

_DEMO_COLLECTION_KIND = {"sentinel-2-l2a": "S2L2A", "sentinel-1-grd": "S1", "cop-dem-glo-30": "DEM"}
_TARGET_COLLECTION = {
    "earth-search-v1": {"S2L2A": "sentinel-2-l2a", "S1": "sentinel-1-grd", "DEM": "cop-dem-glo-30"},
    "planetary-computer": {"S2L2A": "sentinel-2-l2a", "S1": "sentinel-1-rtc", "DEM": "cop-dem-glo-30"},
    "cdse": {"S2L2A": "sentinel-2-l2a", "S1": "sentinel-1-grd", "DEM": "cop-dem-glo-30-dged-cog"},
}
_OUR_KIND = {"S2L2A": "S2L2A", "DEM": "DEM"}


@dataclass
class Faults:
    """What the server does wrong, set by the test."""

    search_429: int = 0
    """Searches still to answer 429 (with ``Retry-After: 1``)."""
    file_503: set[str] = field(default_factory=set)
    """Asset paths (as requested, without query) to answer 503 once each."""
    token_ttl_s: float = 3600.0


@dataclass
class Seen:
    """What the server was asked (appended from its threads)."""

    requests: list[tuple[str, str, int]] = field(default_factory=list)
    """(method, path with query, status answered)."""
    tokens: list[str] = field(default_factory=list)
    """Collections whose SAS token was asked for."""
    s3_auth: list[str] = field(default_factory=list)
    """Authorization headers of ``/eodata/`` requests."""
    headers: list[str] = field(default_factory=list)
    """Every request's headers, as text (to look for leaked secrets)."""

    def paths(self, prefix: str, status: int | None = None) -> list[str]:
        """Requested paths starting with ``prefix`` (answered ``status`` when given)."""
        return [p for _, p, s in self.requests if p.startswith(prefix) and (status is None or s == status)]


def _template(realdata: Path, name: str, index: int = 0) -> dict[str, Any]:
    data = json.loads((realdata / "stac_items" / name).read_text())
    if isinstance(data, list):
        return dict(data[index])
    if data.get("type") == "FeatureCollection":
        return dict(data["features"][index])
    return dict(data)


def _templates(realdata: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Per layout and kind, the real item each served item is derived from."""
    pc_s1 = _template(realdata, "sentinel-1-rtc-pc.json")
    grd = _template(realdata, "sentinel-1-grd-pc-farmvibes_sample_pc_output.json")
    pc_dem = _template(realdata, "cop-dem-glo-30-pc.json")
    return {
        "earth-search-v1": {
            "S2L2A": _template(realdata, "earth-search-v1-sentinel-2-l1c-search.json"),
            "S1": grd,  # no real Earth Search S1 item: the GRD of Planetary Computer, ES spelling
            "DEM": pc_dem,
        },
        "planetary-computer": {
            "S2L2A": _template(realdata, "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"),
            "S1": pc_s1,
            "DEM": pc_dem,
        },
        "cdse": {
            "S2L2A": _template(
                realdata, "S2C_MSIL2A_20250330T100051_N0511_R122_T33UWP_20250330T145914_cdse_stac_v110_trimmed.json"
            ),
            "S1": grd,
            "DEM": pc_dem,
        },
    }


def _demo_items(root: Path) -> Iterator[tuple[str, dict[str, Any], Path]]:
    for collection, kind in _DEMO_COLLECTION_KIND.items():
        for path in sorted((root / collection).glob("*/*.json")):
            yield kind, json.loads(path.read_text()), path.parent


def _target_key(layout: str, kind: str, canonical: str, resolution: int | None) -> str:
    our_kind = {"S1": "S1RTC" if layout == "planetary-computer" else "S1GRD"}.get(kind, kind)
    spellings = CATALOGS[layout].aliases(our_kind)[canonical]
    if resolution is not None and f"{canonical}_{resolution}m" in spellings:
        return f"{canonical}_{resolution}m"
    return spellings[0]


def _asset_template(template: dict[str, Any], key: str) -> dict[str, Any]:
    assets = template.get("assets", {})
    if key in assets:
        return copy.deepcopy(assets[key])
    data = [a for a in assets.values() if "data" in a.get("roles", []) and ("raster:bands" in a or "raster:scale" in a)]
    return copy.deepcopy(data[0] if data else next(iter(assets.values()), {}))


def served_items(root: Path, realdata: Path, layout: str, base: str) -> dict[str, list[dict[str, Any]]]:
    """The demo catalog under ``root`` as ``layout`` would list it: collection id → item dicts."""
    templates = _templates(realdata)[layout]
    out: dict[str, list[dict[str, Any]]] = {c: [] for c in _TARGET_COLLECTION[layout].values()}
    for kind, demo, folder in _demo_items(root):
        template = templates[kind]
        collection = _TARGET_COLLECTION[layout][kind]
        props = {k: v for k, v in template.get("properties", {}).items() if not k.startswith(("proj:", "s2:"))}
        props.update(
            {
                "datetime": demo["properties"]["datetime"],
                "platform": demo["properties"].get("platform", props.get("platform")),
                "updated": "2024-10-01T00:00:00Z",
            }
        )
        props.pop("start_datetime", None)
        props.pop("end_datetime", None)
        if "eo:cloud_cover" in demo["properties"]:
            props["eo:cloud_cover"] = demo["properties"]["eo:cloud_cover"]
        baseline = demo["properties"].get("s2:processing_baseline")
        if kind == "S2L2A" and baseline:
            if layout == "cdse":
                props["processing:version"] = baseline
            else:
                props["s2:processing_baseline"] = baseline
                props["s2:product_type"] = "S2MSI2A"
            if layout == "earth-search-v1":
                props["earthsearch:boa_offset_applied"] = False  # the files still hold the +1000 DN
        assets: dict[str, Any] = {}
        for canonical, demo_asset in demo["assets"].items():
            rel = (folder / demo_asset["href"]).resolve().relative_to(root.resolve()).as_posix()
            bands = demo_asset.get("raster:bands") or [{}]
            resolution = bands[0].get("spatial_resolution")
            key = _target_key(layout, kind, canonical, int(resolution) if resolution else None)
            asset = _asset_template(template, key)
            for stale in ("file:checksum", "file:size", "file:local_path", "alternate", "proj:bbox", "bands"):
                asset.pop(stale, None)
            asset.update({k: v for k, v in demo_asset.items() if k.startswith("proj:")})
            asset["type"] = demo_asset["type"]
            if kind == "S1":  # say what the served file holds (linear power), not the template's DN
                for field in ("title", "description"):
                    asset.pop(field, None)
                    if field in demo_asset:
                        asset[field] = demo_asset[field]
                if layout == "planetary-computer":  # its sentinel-1-rtc: the same file, served as γ⁰
                    asset["title"] = f"{canonical.upper()}: gamma0, terrain corrected, linear power"
            if layout == "cdse":
                asset["href"] = f"s3://eodata/{rel}"
                asset.pop("raster:bands", None)
                asset["nodata"] = bands[0].get("nodata")
                asset["data_type"] = bands[0].get("data_type")
                if "scale" in bands[0]:
                    asset["raster:scale"] = bands[0]["scale"]
                    asset["raster:offset"] = bands[0].get("offset", 0.0)
                else:
                    asset.pop("raster:scale", None)
                    asset.pop("raster:offset", None)
            else:
                where = "signed" if CATALOGS[layout].signing else "plain"
                asset["href"] = f"{base}/files/{where}/{rel}"
                asset["raster:bands"] = bands
            assets[key] = asset
        item_id = demo["id"]
        out[collection].append(
            {
                "type": "Feature",
                "stac_version": template.get("stac_version", "1.0.0"),
                "stac_extensions": template.get("stac_extensions", []),
                "id": item_id,
                "collection": collection,
                "geometry": demo["geometry"],
                "bbox": demo["bbox"],
                "properties": props,
                "assets": assets,
                "links": [
                    {"rel": "self", "href": f"{base}/{layout}/collections/{collection}/items/{item_id}"},
                    {"rel": "collection", "href": f"{base}/{layout}/collections/{collection}"},
                ],
            }
        )
    return out


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _in_datetime(item: dict[str, Any], window: str | None) -> bool:
    if not window:
        return True
    when = _parse_time(item["properties"]["datetime"])
    lo, _, hi = window.partition("/")
    if not hi:
        return when == _parse_time(lo)
    return (lo in ("", "..") or when >= _parse_time(lo)) and (hi in ("", "..") or when <= _parse_time(hi))


class LoopbackStac:
    """The server's state: items per layout, faults, what it saw. ``url(layout)`` is a ``stac:`` URL."""

    def __init__(self, root: Path, realdata: Path, base: str) -> None:
        self.root = root
        self.base = base
        self.items = {layout: served_items(root, realdata, layout, base) for layout in LAYOUTS}
        self.faults = Faults()
        self.seen = Seen()
        self.search_methods: tuple[str, ...] = ("GET", "POST")
        self.lock = threading.Lock()

    @property
    def token_url(self) -> str:
        """The SAS token endpoint, as ``GLACIAL_LAKES_PC_TOKEN_URL`` names it."""
        return f"{self.base}/api/sas/v1/token/{{collection}}"

    def url(self, layout: str) -> str:
        """The landing page of one layout's API."""
        return f"{self.base}/{layout}/"

    def landing(self, layout: str) -> dict[str, Any]:
        """The landing page: conformance and links."""
        api = f"{self.base}/{layout}"
        return {
            "type": "Catalog",
            "id": f"loopback-{layout}",
            "stac_version": "1.0.0",
            "description": f"Loopback {layout}",
            "conformsTo": [
                "https://api.stacspec.org/v1.0.0/core",
                "https://api.stacspec.org/v1.0.0/item-search",
                "https://api.stacspec.org/v1.0.0/collections",
            ],
            "links": [
                {"rel": "self", "href": f"{api}/"},
                {"rel": "root", "href": f"{api}/"},
                {"rel": "conformance", "href": f"{api}/conformance"},
                {"rel": "data", "href": f"{api}/collections"},
                *(
                    {"rel": "search", "type": "application/geo+json", "href": f"{api}/search", "method": m}
                    for m in self.search_methods
                ),
            ],
        }

    def search(self, layout: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """One page of a search; None when a named collection does not exist (404)."""
        collections = params.get("collections") or list(self.items[layout])
        if isinstance(collections, str):
            collections = collections.split(",")
        if any(c not in self.items[layout] for c in collections):
            return None
        area = params.get("intersects")
        if isinstance(area, str):
            area = json.loads(area)
        geom = shape(area) if area else None
        bbox = params.get("bbox")
        if geom is None and bbox:
            values = [float(v) for v in (bbox.split(",") if isinstance(bbox, str) else bbox)]
            geom = box(*values)
        matched = [
            item
            for c in collections
            for item in self.items[layout][c]
            if (geom is None or shape(item["geometry"]).intersects(geom)) and _in_datetime(item, params.get("datetime"))
        ]
        limit = min(int(params.get("limit") or 10), MAX_PAGE)
        offset = int(params.get("token") or 0)
        page = matched[offset : offset + limit]
        links: list[dict[str, Any]] = []
        if offset + limit < len(matched):
            nxt = {**params, "token": str(offset + limit)}
            href = f"{self.base}/{layout}/search"
            if params.get("_method") == "POST":
                links.append(
                    {"rel": "next", "href": href, "method": "POST", "body": {"token": nxt["token"]}, "merge": True}
                )
            else:
                query = {
                    k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in nxt.items() if k != "_method"
                }
                links.append({"rel": "next", "href": f"{href}?{urlencode(query)}", "method": "GET"})
        return {
            "type": "FeatureCollection",
            "features": page,
            "links": links,
            "numberMatched": len(matched),
            "numberReturned": len(page),
        }

    def token(self, collection: str) -> dict[str, Any]:
        """A Planetary-Computer-like SAS token answer."""
        expiry = datetime.now(UTC) + timedelta(seconds=self.faults.token_ttl_s)
        stamp = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"msft:expiry": stamp, "token": f"st=2024-01-01T00%3A00%3A00Z&se={stamp}&sp=rl&sr=c&sig={SAS_SIG}"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: LoopbackStac

    def log_message(self, *args: Any) -> None:
        return

    def _send(
        self, code: int, body: bytes, ctype: str = "application/json", extra: dict[str, str] | None = None
    ) -> None:
        with self.state.lock:  # recorded before the answer leaves: a test reads it once the client has it
            self.state.seen.requests.append((self.command, self.path, code))
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(obj).encode(), extra=extra)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._route(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self._route(body)

    def _route(self, body: dict[str, Any] | None) -> None:
        state = self.state
        with state.lock:
            state.seen.headers.append(str(self.headers))
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        if parts[:1] == ["files"]:
            return self._file(parts[1], "/".join(parts[2:]), parse_qs(url.query))
        if parts[:1] == ["eodata"]:
            return self._s3("/".join(parts[1:]))
        if parts[:4] == ["api", "sas", "v1", "token"] and len(parts) == 5:
            with state.lock:
                state.seen.tokens.append(parts[4])
            return self._json(200, state.token(parts[4]))
        if not parts or parts[0] not in LAYOUTS:
            return self._json(404, {"code": "NotFound", "description": self.path})
        layout, rest = parts[0], parts[1:]
        if not rest:
            return self._json(200, state.landing(layout))
        if rest == ["conformance"]:
            return self._json(200, {"conformsTo": state.landing(layout)["conformsTo"]})
        if rest == ["collections"]:
            cols = [self._collection(layout, c) for c in state.items[layout]]
            return self._json(200, {"collections": cols, "links": []})
        if rest[0] == "collections" and len(rest) == 2 and rest[1] in state.items[layout]:
            return self._json(200, self._collection(layout, rest[1]))
        if rest == ["search"]:
            with state.lock:
                busy = state.faults.search_429 > 0
                state.faults.search_429 -= int(busy)
            if busy:
                return self._json(429, {"code": "TooManyRequests"}, {"Retry-After": "1"})
            if body is not None:
                params = {**body, "_method": "POST"}
            else:
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
            page = state.search(layout, params)
            if page is None:
                return self._json(404, {"code": "NotFound", "description": "collection not found"})
            return self._json(200, page)
        return self._json(404, {"code": "NotFound", "description": self.path})

    def _collection(self, layout: str, collection: str) -> dict[str, Any]:
        return {
            "type": "Collection",
            "id": collection,
            "stac_version": "1.0.0",
            "description": collection,
            "license": "proprietary",
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
            "links": [],
        }

    def _file(self, kind: str, rel: str, query: dict[str, list[str]]) -> None:
        if kind == "signed" and query.get("sig", [""])[0] != SAS_SIG:
            return self._send(403, b"<Error>AuthenticationFailed: no SAS token</Error>", "application/xml")
        self._serve(rel, f"/files/{kind}/{rel}")

    def _s3(self, rel: str) -> None:
        auth = self.headers.get("Authorization", "")
        with self.state.lock:
            self.state.seen.s3_auth.append(auth)
        if not re.match(rf"AWS4-HMAC-SHA256 Credential={S3_KEY_ID}/", auth):
            return self._send(403, b"<Error><Code>AccessDenied</Code></Error>", "application/xml")
        self._serve(rel, f"/eodata/{rel}")

    def _serve(self, rel: str, key: str) -> None:
        with self.state.lock:
            fail = key in self.state.faults.file_503
            self.state.faults.file_503.discard(key)
        if fail:
            return self._send(503, b"busy", "text/plain")
        path = (self.state.root / rel).resolve()
        if not path.is_file() or not path.is_relative_to(self.state.root.resolve()):
            return self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
        data = path.read_bytes()
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if m is None:
            return self._send(200, data, "image/tiff", {"Accept-Ranges": "bytes"})
        lo = int(m.group(1))
        hi = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
        headers = {"Accept-Ranges": "bytes", "Content-Range": f"bytes {lo}-{hi}/{len(data)}"}
        self._send(206, data[lo : hi + 1], "image/tiff", headers)


@contextmanager
def loopback_stac(root: Path, realdata: Path) -> Iterator[LoopbackStac]:
    """Serves the demo catalog under ``root`` on 127.0.0.1 (a free port) until the block ends."""
    handler = type("Handler", (_Handler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    state = LoopbackStac(root, realdata, f"http://127.0.0.1:{server.server_address[1]}")
    handler.state = state
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
