"""Finding acquisitions: one ``AcquisitionSource`` protocol, STAC-backed implementations.

Every source returns the same frozen ``Acquisition`` records, with asset hrefs resolved to absolute
paths or URLs. Collections and asset keys of the public catalogs are mapped in one table
(``COLLECTION_KINDS``) so the rest of the pipeline only sees our kinds: S2L2A, S1GRD, S1RTC, DEM.

A catalog decides which files and URLs the flow reads, so its hrefs are constrained
(:func:`local_href`, :func:`remote_href`): a local catalog's assets and links stay under its root
(symlinks resolved), a STAC API's assets are ``http(s)://`` (``s3://`` only when enabled), and
GDAL ``/vsi…`` paths or other schemes are refused with the item and asset named. Every remote
call has a timeout (:data:`REMOTE_TIMEOUT_S`). Each acquisition carries a ``fingerprint`` of
what its inputs are (size, modification time and path of local files; the item's ``updated`` /
``created`` time or asset checksums for remote ones), which the scene ledger key covers.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Protocol

import pystac
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from core.errors import SourceError  # bad input, not retryable
from tasks.sar import asset_metadata

# Collection id (as the public catalogs spell it) → our kind.
COLLECTION_KINDS: dict[str, str] = {
    "sentinel-2-l2a": "S2L2A",
    "sentinel-2-c1-l2a": "S2L2A",
    "sentinel-1-grd": "S1GRD",
    "sentinel-1-rtc": "S1RTC",
    "cop-dem-glo-30": "DEM",
    "cop-dem-glo-90": "DEM",
}

# Kind → asset keys the pipeline reads, per our canonical names; catalog spellings are tried in order.
ASSET_ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "S2L2A": {
        **{
            b: (b, b.lower(), f"{b}_10m", f"{b}_20m", f"{b}_60m")
            for b in (
                "B01",
                "B02",
                "B03",
                "B04",
                "B05",
                "B06",
                "B07",
                "B08",
                "B8A",
                "B09",
                "B11",
                "B12",
            )
        },
        "SCL": ("SCL", "scl", "SCL_20m"),
    },
    # GRD DN is calibrated with the product's LUT and geocoded through its annotation (tasks.s1_grd).
    "S1GRD": {
        "vv": ("vv", "VV"),
        "vh": ("vh", "VH"),
        "calibration-vv": ("schema-calibration-vv",),
        "calibration-vh": ("schema-calibration-vh",),
        "annotation-vv": ("schema-product-vv",),
        "annotation-vh": ("schema-product-vh",),
    },
    "S1RTC": {"vv": ("vv", "VV"), "vh": ("vh", "VH")},
    "DEM": {"data": ("data", "elevation", "DEM")},
}


@dataclass(frozen=True)
class Acquisition:
    """One product found by a source.

    ``assets`` maps our canonical asset keys to absolute hrefs. ``footprint`` is EPSG:4326.
    """

    product_id: str
    kind: str
    platform: str
    sensing_time: datetime
    footprint: BaseGeometry
    assets: tuple[tuple[str, str], ...]
    source: str
    processing_baseline: str | None = None
    cloud_cover: float | None = None
    fingerprint: str = ""
    """What the inputs are (see the module docstring); part of the scene ledger key."""
    metadata: tuple[tuple[str, str], ...] = ()
    """What the item says its assets hold, flattened to strings (S1: ``tasks.sar.asset_metadata``)."""

    def asset(self, key: str) -> str:
        """Href of one canonical asset key; KeyError names the product when missing."""
        for k, href in self.assets:
            if k == key:
                return href
        raise KeyError(f"{self.product_id} has no asset {key!r}")

    @property
    def asset_map(self) -> dict[str, str]:
        """The assets as a dict: asset key → href."""
        return dict(self.assets)


class AcquisitionSource(Protocol):
    """Anything that can list acquisitions over an AOI and a time window."""

    @property
    def name(self) -> str:
        """The source's label, recorded on every acquisition it finds."""
        ...

    def search(self, aoi: BaseGeometry, start: date, end: date, kinds: Sequence[str]) -> list[Acquisition]:
        """Acquisitions of ``kinds`` intersecting ``aoi`` (EPSG:4326) sensed in [start, end] (DEM: any time)."""
        ...


class TransientSourceError(RuntimeError):
    """A STAC API failed in a way worth retrying (HTTP 429 / 5xx, a dropped connection)."""


REMOTE_TIMEOUT_S = (10.0, 20.0)
"""(connect, read) timeouts in seconds of every HTTP call to a STAC API. A server that accepts and
never answers fails a search within ~20 s; GDAL's reads of remote assets use the same figures."""

MAX_CATALOG_FILE_BYTES = 16 * 1024 * 1024
"""Largest STAC JSON file (catalog, collection, item) read from a local catalog, bytes."""

MAX_CATALOG_DEPTH = 16
"""Deepest chain of child links followed from a local catalog's root."""

HrefCheck = Callable[[str, str], str]
"""``check(href, where) -> href``: vets one href (``where`` names the item and asset for the message)."""
Fingerprint = Callable[[pystac.Item, tuple[tuple[str, str], ...]], str]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def _is_gdal_prefix(href: str) -> bool:
    return href.lstrip().lower().startswith("/vsi")


def local_href(root: Path) -> HrefCheck:
    """The href check of a local catalog under ``root``: plain paths (or ``file:``) resolving inside it.

    The path is resolved (``..`` and symlinks), so ``../../etc/passwd``, an absolute path elsewhere
    or a symlink pointing out of the root is refused; the resolved path is returned.
    """
    base = Path(os.path.realpath(root))

    def check(href: str, where: str) -> str:
        if _is_gdal_prefix(href):
            raise SourceError(f"{where}: href {href!r} is a GDAL /vsi… path; a local catalog names files only")
        path = href
        m = _SCHEME.match(href)
        if m is not None:
            if m.group(1).lower() != "file":
                raise SourceError(f"{where}: href {href!r} has scheme {m.group(1)!r}; a local catalog names files only")
            path = href[len("file:") :].removeprefix("//")
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(base):
            raise SourceError(f"{where}: href {href!r} resolves to {real}, outside the catalog root {base}")
        return str(real)

    return check


def remote_href(allow_s3: bool = False) -> HrefCheck:
    """The href check of a STAC API: ``http(s)://`` URLs (``s3://`` too when ``allow_s3``), nothing else."""
    schemes = ("http", "https", "s3") if allow_s3 else ("http", "https")

    def check(href: str, where: str) -> str:
        m = _SCHEME.match(href)
        if _is_gdal_prefix(href) or m is None or m.group(1).lower() not in schemes or "/vsi" in href.lower():
            raise SourceError(f"{where}: href {href!r} is not a {'/'.join(s + '://' for s in schemes)} URL")
        return href

    return check


def local_fingerprint(item: pystac.Item, assets: tuple[tuple[str, str], ...]) -> str:
    """Size, modification time (ns) and path of each asset file; a missing file reads as "missing"."""
    parts = []
    for key, href in assets:
        try:
            st = os.stat(href)
            parts.append(f"{key}={href}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{key}={href}:missing")
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def remote_fingerprint(item: pystac.Item, assets: tuple[tuple[str, str], ...]) -> str:
    """The item's ``updated`` (else ``created``) time, the asset hrefs and any ``file:checksum``."""
    parts = [str(item.properties.get("updated") or item.properties.get("created") or "")]
    for key, href in assets:
        parts.append(f"{key}={href}")
    for asset in item.assets.values():
        checksum = asset.extra_fields.get("file:checksum")
        if checksum:
            parts.append(f"{asset.href}#{checksum}")
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def _canonical_assets(kind: str, item: pystac.Item, check: HrefCheck) -> tuple[tuple[str, str], ...]:
    found: list[tuple[str, str]] = []
    for canonical, spellings in ASSET_ALIASES[kind].items():
        for spelling in spellings:
            asset = item.assets.get(spelling)
            if asset is not None:
                where = f"item {item.id!r} asset {spelling!r}"
                _any_href(asset.href, where)  # the raw href: pystac turns "/vsicurl/http://x" into a path
                found.append((canonical, check(asset.get_absolute_href() or asset.href, where)))
                break
    return tuple(found)


def _any_href(href: str, where: str) -> str:
    """The check of :func:`item_to_acquisition` when none is given: GDAL prefixes only."""
    if _is_gdal_prefix(href):
        raise SourceError(f"{where}: href {href!r} is a GDAL /vsi… path; catalogs may not name one")
    return href


def item_to_acquisition(
    item: pystac.Item, kind: str, source: str, check: HrefCheck = _any_href, fingerprint: Fingerprint | None = None
) -> Acquisition:
    """Our record of one STAC item (pure apart from resolving relative hrefs).

    ``check`` vets (and may rewrite) every asset href; ``fingerprint`` says what the inputs are
    (default: :func:`remote_fingerprint`). Raises SourceError naming the item when it has no time.
    """
    props = item.properties
    try:
        when = item.datetime or datetime.fromisoformat(str(props["start_datetime"]).replace("Z", "+00:00"))
    except (KeyError, ValueError) as exc:
        raise SourceError(f"item {item.id!r} of {source}: no usable datetime ({exc})") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    baseline = props.get("s2:processing_baseline") or props.get("processing:version")
    assets = _canonical_assets(kind, item, check)
    return Acquisition(
        product_id=item.id,
        kind=kind,
        platform=str(props.get("platform", "unknown")).lower(),
        sensing_time=when.astimezone(UTC),
        footprint=shape(item.geometry) if item.geometry else None,
        assets=assets,
        source=source,
        processing_baseline=str(baseline) if baseline is not None else None,
        cloud_cover=props.get("eo:cloud_cover"),
        fingerprint=(fingerprint or remote_fingerprint)(item, assets),
        metadata=asset_metadata(item, kind, ASSET_ALIASES.get(kind, {})),
    )


def _in_window(when: datetime, start: date, end: date) -> bool:
    lo = datetime.combine(start, time.min, tzinfo=UTC)
    hi = datetime.combine(end, time.max, tzinfo=UTC)
    return lo <= when <= hi


def filter_acquisitions(
    acquisitions: Iterable[Acquisition], aoi: BaseGeometry, start: date, end: date, kinds: Sequence[str]
) -> list[Acquisition]:
    """Keep the kinds asked for, intersecting the AOI, inside the window (DEM is timeless), sorted by time."""
    kept = [
        a
        for a in acquisitions
        if a.kind in kinds
        and (a.footprint is None or a.footprint.intersects(aoi))
        and (a.kind == "DEM" or _in_window(a.sensing_time, start, end))
    ]
    return sorted(kept, key=lambda a: (a.sensing_time, a.product_id))


@dataclass(frozen=True)
class LocalStacSource:
    """A static STAC catalog on disk (the default source; the demo generator writes one)."""

    root: Path

    @property
    def name(self) -> str:
        """The source URI, ``local:DIR``."""
        return f"local:{self.root}"

    def _catalog_file(self) -> Path:
        path = self.root / "catalog.json" if self.root.is_dir() else self.root
        if not path.is_file():
            raise SourceError(f"no STAC catalog at {path}")
        return path

    def items(self) -> Iterator[tuple[str, pystac.Item]]:
        """Every item of a collection we know (kind, item), links checked to stay under the root.

        Raises SourceError naming the file for an unreadable or oversized JSON file, a link
        outside the root or with a scheme, a loop, or a chain deeper than :data:`MAX_CATALOG_DEPTH`.
        """
        top = self._catalog_file()
        check = local_href(top.parent)
        seen: set[str] = set()

        def walk(path: Path, kind: str | None, above: tuple[Path, ...]) -> Iterator[tuple[str, pystac.Item]]:
            if path in above:
                raise SourceError(f"{path}: catalog loops (it links back to itself through {above[-1]})")
            if len(above) > MAX_CATALOG_DEPTH:
                raise SourceError(f"{path}: catalog nests deeper than {MAX_CATALOG_DEPTH} levels")
            if str(path) in seen:  # linked from two parents: read once
                return
            seen.add(str(path))
            obj = _read_stac(path)
            if isinstance(obj, pystac.Item):
                if kind is not None:
                    yield kind, obj
                return
            kind = COLLECTION_KINDS.get(obj.id, kind)
            for link in obj.links:
                if link.rel not in ("child", "item"):
                    continue
                if isinstance(link.target, str):
                    _any_href(link.target, f"{path} {link.rel} link")
                target = link.get_absolute_href() or str(link.target)
                yield from walk(Path(check(target, f"{path} {link.rel} link")), kind, (*above, path))

        yield from walk(Path(os.path.realpath(top)), None, ())

    def acquisitions(self, kinds: Sequence[str] | None = None) -> list[Acquisition]:
        """Every acquisition of the catalog (of ``kinds`` when given), hrefs checked."""
        check = local_href(self._catalog_file().parent)
        return [
            item_to_acquisition(item, kind, self.name, check, local_fingerprint)
            for kind, item in self.items()
            if kinds is None or kind in kinds
        ]

    def search(self, aoi: BaseGeometry, start: date, end: date, kinds: Sequence[str]) -> list[Acquisition]:
        """Acquisitions of ``kinds`` intersecting ``aoi`` (EPSG:4326) sensed in [start, end] (DEM: any time)."""
        return filter_acquisitions(self.acquisitions(kinds), aoi, start, end, kinds)


def _read_stac(path: Path) -> Any:
    """One STAC JSON file, bounded in size; SourceError naming it when it is not one."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SourceError(f"{path}: unreadable STAC file ({exc.strerror})") from None
    if not path.is_file():
        raise SourceError(f"{path}: not a regular file")
    if size > MAX_CATALOG_FILE_BYTES:
        raise SourceError(f"{path}: STAC file of {size} bytes exceeds the {MAX_CATALOG_FILE_BYTES}-byte limit")
    try:
        obj = pystac.read_file(str(path))
    except Exception as exc:  # json, pystac and OS errors alike: the file is not a STAC object we can use
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise SourceError(f"{path}: not a STAC catalog, collection or item ({reason})") from None
    if not isinstance(obj, pystac.Catalog | pystac.Item):
        raise SourceError(f"{path}: not a STAC catalog, collection or item")
    return obj


@dataclass(frozen=True)
class StacApiSource:
    """A STAC API (Copernicus Data Space, Earth Search, Planetary Computer) through pystac-client.

    Every request has the :data:`REMOTE_TIMEOUT_S` (connect, read) timeouts; asset hrefs must be
    ``http(s)://`` (or ``s3://`` with ``allow_s3``).
    """

    url: str
    max_items: int = 500
    allow_s3: bool = False
    timeout: tuple[float, float] = REMOTE_TIMEOUT_S

    @property
    def name(self) -> str:
        """The source URI, ``stac:URL``."""
        return f"stac:{self.url}"

    def _client(self) -> Any:
        from pystac_client import Client  # imported here: only this source needs it
        from pystac_client.stac_api_io import StacApiIO
        from urllib3 import Retry

        # Connection attempts are retried quickly here; a read that timed out is not (a silent
        # server stays silent), and 429/5xx answers go up as TransientSourceError, whose retry
        # with back-off is the search task's.
        retry = Retry(total=2, connect=2, read=0, status=0, other=0, backoff_factor=0.25, raise_on_status=False)
        try:
            io = StacApiIO(timeout=self.timeout, max_retries=retry)
            return Client.open(self.url, stac_io=io, timeout=self.timeout)  # open() re-applies its own timeout
        except Exception as exc:
            raise self._classify(exc) from None

    def _classify(self, exc: Exception) -> Exception:
        """A failed request as one line naming the API: transient (retry), timeout or bad input."""
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        status = getattr(exc, "status_code", None)
        if status is None and (m := re.search(r"\b(429|5\d\d)\b", reason)) is not None:
            status = int(m.group(1))
        if "timed out" in reason.lower() or "timeout" in reason.lower():
            return TimeoutError(f"{self.name}: no answer within {self.timeout[1]:g} s ({reason})")
        if status == 429 or (isinstance(status, int) and status >= 500) or "connection" in reason.lower():
            return TransientSourceError(f"{self.name}: {reason}")
        return SourceError(f"{self.name}: not a usable STAC API ({reason})")

    def search(self, aoi: BaseGeometry, start: date, end: date, kinds: Sequence[str]) -> list[Acquisition]:
        """Acquisitions of ``kinds`` intersecting ``aoi`` (EPSG:4326) sensed in [start, end] (DEM: any time)."""
        client = self._client()
        check = remote_href(self.allow_s3)
        found: list[Acquisition] = []
        for collection_id, kind in COLLECTION_KINDS.items():
            if kind not in kinds:
                continue
            window = None if kind == "DEM" else f"{start.isoformat()}/{end.isoformat()}T23:59:59Z"
            try:
                search = client.search(
                    collections=[collection_id],
                    intersects=aoi.__geo_interface__,
                    datetime=window,
                    max_items=self.max_items,
                )
                items = list(search.items())
            except Exception as exc:  # a catalog without this collection answers 404/400
                if "not found" in str(exc).lower() or "404" in str(exc):
                    continue
                raise self._classify(exc) from None
            found.extend(item_to_acquisition(item, kind, self.name, check) for item in items)
        return filter_acquisitions(found, aoi, start, end, kinds)


def check_source(source: AcquisitionSource) -> None:
    """Opens and checks a source before a flow starts; SourceError naming the input otherwise.

    A local catalog is walked whole (every file parses, every link and asset href stays under its
    root); a STAC API's landing page must answer within :data:`REMOTE_TIMEOUT_S`.
    """
    if isinstance(source, LocalStacSource):
        source.acquisitions()
        return
    if isinstance(source, StacApiSource):
        try:
            source._client()
        except (TimeoutError, TransientSourceError) as exc:  # for the edge, no answer is bad input
            raise SourceError(f"--source {exc}") from None


def source_from_uri(uri: str, *, check: bool = True, allow_s3: bool = False) -> AcquisitionSource:
    """``local:DIR`` | ``stac:URL`` → a source, checked by :func:`check_source` unless ``check=False``.

    Raises SourceError naming the input for an unknown scheme or a source that fails its check.
    """
    scheme, _, rest = uri.partition(":")
    source: AcquisitionSource
    if scheme == "local" and rest:
        if _is_gdal_prefix(rest) or _SCHEME.match(rest):
            raise SourceError(f"unsupported --source {uri!r}: local:DIR names a directory, not a URL or /vsi… path")
        source = LocalStacSource(Path(rest).expanduser().resolve())
    elif scheme == "stac" and rest.startswith(("http://", "https://")):
        source = StacApiSource(rest, allow_s3=allow_s3)
    else:
        raise SourceError(f"unsupported --source {uri!r}: expected local:DIR or stac:URL")
    if check:
        check_source(source)
    return source
