"""A loopback DHuS hub (real HTTP on 127.0.0.1) answering sentinelsat's OpenSearch and OData v1 requests.

Answers are derived from the recorded responses in ``realdata/dhus_responses``: the OpenSearch
feed and an entry per kind (S2 L2A from ``test_s2_cloudcover``, S1 IW GRDH from
``test_sentinel1_flag``) with id, title, file name, footprint (WKT and GML), dates and cloud cover
rewritten per served product; the OData product entry from ``test_download_product_nodes`` with
id, name, length, checksum, dates and geometry rewritten; the 401 page and its
``WWW-Authenticate`` header from ``test_SentinelAPI_wrong_credentials``; the maintenance page
``server_maintenance.html``.

Routes: ``/search?format=json&rows=&start=&q=`` (the Solr query's ``platformname``,
``producttype``, ``beginPosition`` range, ``cloudcoverpercentage`` range and ``footprint``
Intersects filters honoured; ``rows=0`` counts), ``/odata/v1/Products('ID')?$format=json`` and
``/odata/v1/Products('ID')/$value`` (the zip, HTTP ``Range`` honoured with 206). Every request
needs basic auth with :data:`USER` / :data:`PASSWORD`, else 401.

Faults, switched on per test (:class:`Faults`): ``cut`` (product ids whose next download stops
after half its bytes, the connection closed), ``bad_checksum`` (ids whose OData entry states a
wrong MD5), ``maintenance`` (this many answers of 503 with the maintenance page before the next
ones), ``offline`` (ids in the long-term archive: OData ``Online`` false, and a ``$value`` request
answers 202 "accepted for retrieval" and brings the product online, as the archive does between
two runs), ``lta_quota`` (a ``$value`` request of an offline product answers 403 with DHuS's
quota ``cause-message`` instead).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import re
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml
from shapely import wkt
from shapely.geometry.base import BaseGeometry

USER = "lakes-test"
PASSWORD = "dhus-loopback-secret-7c1e"
"""The hub's account (the password is a secret to look for in logs and parameters)."""

_DIR = ("dhus_responses",)


@dataclass(frozen=True)
class ServedProduct:
    """One product the hub serves: its zip bytes and what the search says of it."""

    uuid: str
    title: str
    kind: str
    """``S2L2A`` or ``S1GRD``."""
    sensing: datetime
    footprint: BaseGeometry
    data: bytes
    cloud_cover: float | None = None

    @property
    def md5(self) -> str:
        """The zip's MD5 hex digest (what the OData ``Checksum`` states)."""
        return hashlib.md5(self.data, usedforsecurity=False).hexdigest()


@dataclass
class Faults:
    """Fault switches (see the module docstring); changed by tests between requests."""

    cut: set[str] = field(default_factory=set)
    bad_checksum: set[str] = field(default_factory=set)
    maintenance: int = 0
    offline: set[str] = field(default_factory=set)
    lta_quota: bool = False


@dataclass
class Seen:
    """What the hub was asked: (method, path, Range header, status) per request."""

    requests: list[tuple[str, str, str, int]] = field(default_factory=list)

    def downloads(self, uuid: str) -> list[tuple[str, int]]:
        """(Range header, status) of each ``$value`` request of ``uuid``."""
        return [(r, s) for _, p, r, s in self.requests if f"Products('{uuid}')/$value" in unquote(p)]


def _cassette(realdata: Path, name: str, index: int = 0) -> dict[str, Any]:
    data = yaml.safe_load(realdata.joinpath(*_DIR, name).read_text())
    return dict(data["interactions"][index]["response"])


def safe_zip(title: str, files: dict[str, bytes]) -> bytes:
    """A product zip as DHuS serves it: ``TITLE.SAFE/<files>`` (member names as given)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in files.items():
            archive.writestr(name if name.startswith(("..", "/")) else f"{title}.SAFE/{name}", body)
    return out.getvalue()


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _odata_date(when: datetime) -> str:
    return f"/Date({int(when.timestamp() * 1000)})/"


def _gml(geom: BaseGeometry) -> str:
    coords = " ".join(f"{y},{x}" for x, y in geom.exterior.coords)  # type: ignore[attr-defined]
    return (
        '<gml:Polygon srsName="http://www.opengis.net/gml/srs/epsg.xml#4326" xmlns:gml="http://www.opengis.net/gml">'
        f"<gml:outerBoundaryIs><gml:LinearRing><gml:coordinates>{coords}</gml:coordinates>"
        "</gml:LinearRing></gml:outerBoundaryIs></gml:Polygon>"
    )


class LoopbackDhus:
    """The served products, the templates, the faults and what was asked."""

    def __init__(self, realdata: Path, base: str, products: list[ServedProduct]) -> None:
        self.base = base
        self.products = {p.uuid: p for p in products}
        self.faults = Faults()
        self.seen = Seen()
        self.lock = threading.Lock()
        feed = json.loads(_cassette(realdata, "test_s2_cloudcover.yaml")["body"]["string"])["feed"]
        s1 = json.loads(_cassette(realdata, "test_sentinel1_flag.yaml")["body"]["string"])["feed"]["entry"]
        self.entries = {
            "S2L2A": next(e for e in feed.pop("entry") if "MSIL2A" in e["title"]),
            "S1GRD": next(e for e in s1 if "_IW_GRDH_" in e["title"]),
        }
        self.feed = feed
        nodes = _cassette(realdata, "test_download_product_nodes.yaml")
        self.odata = json.loads(nodes["body"]["string"])["d"]
        unauthorised = _cassette(realdata, "test_SentinelAPI_wrong_credentials.yaml")
        self.unauthorised = (unauthorised["body"]["string"].encode(), unauthorised["headers"]["www-authenticate"][0])
        self.maintenance_page = realdata.joinpath(*_DIR, "server_maintenance.html").read_bytes()

    @property
    def url(self) -> str:
        """The hub's API root, as ``--source dhus:URL`` names it."""
        return f"{self.base}/"

    def entry(self, p: ServedProduct) -> dict[str, Any]:
        """The OpenSearch entry of ``p``, rewritten from the recorded one of its kind."""
        e = copy.deepcopy(self.entries[p.kind])
        odata = f"{self.base}/odata/v1/Products('{p.uuid}')"
        e.update(title=p.title, id=p.uuid)
        e["link"] = [
            {"href": f"{odata}/$value"},
            {"rel": "alternative", "href": f"{odata}/"},
            {"rel": "icon", "href": f"{odata}/Products('Quicklook')/$value"},
        ]
        e["summary"] = f"Date: {_iso(p.sensing)}, Size: {len(p.data)} B"
        e["date"] = [
            {"name": "beginposition", "content": _iso(p.sensing)},
            {"name": "endposition", "content": _iso(p.sensing)},
            {"name": "ingestiondate", "content": _iso(p.sensing)},
        ]
        strings = {
            "filename": f"{p.title}.SAFE",
            "identifier": p.title,
            "uuid": p.uuid,
            "footprint": p.footprint.wkt,
            "gmlfootprint": _gml(p.footprint),
            "platformserialidentifier": p.title[:3].replace("S2", "Sentinel-2").replace("S1", "Sentinel-1"),
            "size": f"{len(p.data)} B",
        }
        e["str"] = [{**s, "content": strings.get(s["name"], s["content"])} for s in e["str"]]
        if p.kind == "S2L2A":
            e["double"] = [
                {**d, "content": str(p.cloud_cover) if d["name"] == "cloudcoverpercentage" else d["content"]}
                for d in e["double"]
            ]
        return e

    def odata_entry(self, p: ServedProduct) -> dict[str, Any]:
        """The OData v1 product entry of ``p``, rewritten from the recorded one."""
        d = copy.deepcopy(self.odata)
        uri = f"{self.base}/odata/v1/Products('{p.uuid}')"
        d["__metadata"].update(id=uri, uri=uri, media_src=f"{uri}/$value", edit_media=f"{uri}/$value")
        md5 = p.md5 if p.uuid not in self.faults.bad_checksum else "0" * 32
        d.update(Id=p.uuid, Name=p.title, ContentLength=str(len(p.data)), Online=p.uuid not in self.faults.offline)
        d["Checksum"].update(Algorithm="MD5", Value=md5)
        d["ContentDate"].update(Start=_odata_date(p.sensing), End=_odata_date(p.sensing))
        d["CreationDate"] = d["IngestionDate"] = _odata_date(p.sensing)
        d["ContentGeometry"] = _gml(p.footprint)
        return {"d": d}

    def search(self, query: str, rows: int, start: int) -> dict[str, Any]:
        """The OpenSearch feed of one page of the products matching the Solr ``query``."""
        matched = [p for p in sorted(self.products.values(), key=lambda p: p.sensing) if _matches(p, query)]
        page = matched[start : start + rows]
        feed = copy.deepcopy(self.feed)
        feed.update({"opensearch:totalResults": str(len(matched)), "opensearch:startIndex": str(start)})
        feed["opensearch:itemsPerPage"] = str(rows)
        entries = [self.entry(p) for p in page]
        if entries:  # DHuS sends a lone entry as an object, not a list (sentinelsat copes with both)
            feed["entry"] = entries[0] if len(entries) == 1 else entries
        return {"feed": feed}


def _matches(p: ServedProduct, query: str) -> bool:
    """Whether ``p`` satisfies the Solr query sentinelsat formats (the fields it uses here)."""
    for name, value in re.findall(r'(platformname|producttype):"?([^"\s]+)"?', query):
        if name == "platformname" and not p.title.startswith(value.replace("Sentinel-", "S")):
            return False
        if name == "producttype" and value != {"S2L2A": "S2MSI2A", "S1GRD": "GRD"}[p.kind]:
            return False
    begin = re.search(r'beginPosition:\["?([^"\s]+)"? TO "?([^"\]\s]+)"?\]', query)
    if begin is not None:
        lo, hi = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in begin.groups())
        if not lo <= p.sensing <= hi:
            return False
    cloud = re.search(r'cloudcoverpercentage:\["?([\d.]+)"? TO "?([\d.]+)"?\]', query)
    if cloud is not None and p.cloud_cover is not None:
        if not float(cloud.group(1)) <= p.cloud_cover <= float(cloud.group(2)):
            return False
    area = re.search(r'footprint:"Intersects\((.+)\)"', query)
    return area is None or wkt.loads(area.group(1)).intersects(p.footprint)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: LoopbackDhus

    def log_message(self, *args: Any) -> None:
        return

    def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None, cut: bool = False) -> None:
        with self.state.lock:  # recorded before the answer leaves: a test reads it once the client has it
            self.state.seen.requests.append((self.command, self.path, self.headers.get("Range", ""), code))
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if cut:  # half the promised bytes, then the connection drops
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json")

    def do_GET(self) -> None:
        state = self.state
        import base64

        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            body, challenge = state.unauthorised
            return self._send(401, body, "text/html;charset=utf-8", {"WWW-Authenticate": challenge})
        with state.lock:
            busy = state.faults.maintenance > 0
            state.faults.maintenance -= int(busy)
        if busy:
            return self._send(503, state.maintenance_page, "text/html")
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        if path == "/search":
            q = query.get("q", [""])[0]
            return self._json(200, state.search(q, int(query["rows"][0]), int(query.get("start", ["0"])[0])))
        m = re.fullmatch(r"/odata/v1/Products\('([^']+)'\)(/\$value)?", path)
        product = state.products.get(m.group(1)) if m else None
        if m is None or product is None:
            return self._json(404, {"error": {"code": None, "message": {"lang": "en", "value": "Not found"}}})
        if m.group(2) is None:
            return self._json(200, state.odata_entry(product))
        return self._product(product)

    def _product(self, p: ServedProduct) -> None:
        with self.state.lock:
            offline, quota = p.uuid in self.state.faults.offline, self.state.faults.lta_quota
            if offline and not quota:
                self.state.faults.offline.discard(p.uuid)
            cut = p.uuid in self.state.faults.cut
            self.state.faults.cut.discard(p.uuid)
        if offline and quota:
            cause = f"User '{USER}' offline products retrieval quota exceeded (20 fetches max) trying to fetch product"
            return self._send(403, b"", "text/plain", {"cause-message": cause})
        if offline:
            return self._send(202, b"", "text/plain")
        disposition = {"Content-Disposition": f'attachment; filename="{p.title}.zip"', "Accept-Ranges": "bytes"}
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if m is None:
            return self._send(200, p.data, "application/octet-stream", disposition, cut)
        lo = int(m.group(1))
        if lo >= len(p.data):
            return self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(p.data)}"})
        hi = min(int(m.group(2)) if m.group(2) else len(p.data) - 1, len(p.data) - 1)
        headers = {**disposition, "Content-Range": f"bytes {lo}-{hi}/{len(p.data)}"}
        self._send(206, p.data[lo : hi + 1], "application/octet-stream", headers, cut)


@contextmanager
def loopback_dhus(realdata: Path, products: list[ServedProduct]) -> Iterator[LoopbackDhus]:
    """Serves ``products`` as a DHuS hub on 127.0.0.1 (a free port) until the block ends."""
    handler = type("Handler", (_Handler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    state = LoopbackDhus(realdata, f"http://127.0.0.1:{server.server_address[1]}", products)
    handler.state = state
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
