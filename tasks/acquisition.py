"""The acquisition record every source returns, and how one STAC item becomes one (pure).

Asset hrefs are resolved to absolute paths or URLs and constrained (:func:`local_href`,
:func:`remote_href`): a local catalog's assets stay under its root (symlinks resolved), a STAC
API's assets are ``http(s)://`` (``s3://`` only when enabled), and GDAL ``/vsi…`` paths or other
schemes are refused with the item and asset named. Each acquisition carries a ``fingerprint`` of
what its inputs are (size, modification time and path of local files; the item's ``updated`` /
``created`` time or asset checksums for remote ones), which the scene ledger key covers, and the
radiometric scaling the item states (``raster:bands`` scale/offset, the processing baseline,
``earthsearch:boa_offset_applied``), so preprocessing reads what the catalog says instead of
guessing.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Protocol

import pystac
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from core.errors import SourceError  # bad input, not retryable
from tasks.catalogs import STATIC
from tasks.sar import asset_metadata

REMOTE_TIMEOUT_S = (10.0, 20.0)
"""(connect, read) timeouts in seconds of every HTTP call to a STAC API. A server that accepts and
never answers fails a search within ~20 s; GDAL's reads of remote assets use the same figures."""


class TransientSourceError(RuntimeError):
    """A STAC API failed in a way worth retrying (HTTP 429 / 5xx, a dropped connection)."""


@dataclass(frozen=True)
class BandScaling:
    """What an item states of one asset's values: ``physical = DN × scale + offset``.

    From ``raster:bands[0].scale/offset`` (raster extension v1) or ``raster:scale/raster:offset``
    (v2, on the asset or its first ``bands`` entry). S2 L2A reflectance: scale 0.0001, offset
    -0.1 when the DN carry the +1000 ``BOA_ADD_OFFSET`` (baseline ≥ 04.00), 0 otherwise. None
    where the item does not say.
    """

    key: str
    """Our canonical asset key (``B02``, ``vv`` …)."""
    scale: float | None
    offset: float | None


@dataclass(frozen=True)
class Signing:
    """How an acquisition's hrefs were signed, so they can be signed again before a late read."""

    token_url: str
    """The SAS token endpoint (``{collection}`` in it)."""
    collection: str
    unsigned: tuple[tuple[str, str], ...]
    """The assets as the catalog lists them (canonical key → href without a token)."""


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
    scaling: tuple[BandScaling, ...] = ()
    """The scale/offset the item states per canonical asset (only assets for which it states one)."""
    boa_offset_applied: bool | None = None
    """``earthsearch:boa_offset_applied`` (or the older ``sentinel:boa_offset_applied``) as the
    item states it: True means the catalog already removed the +1000 DN offset from the files;
    None when the item does not say."""
    signing: Signing | None = None
    """Set when ``assets`` carry a token that expires (see :func:`tasks.signing.refresh_signatures`)."""
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

    def scaling_of(self, key: str) -> BandScaling | None:
        """The stated scale/offset of one canonical asset key; None when the item states none."""
        return next((s for s in self.scaling if s.key == key), None)


class AcquisitionSource(Protocol):
    """Anything that can list acquisitions over an AOI and a time window."""

    @property
    def name(self) -> str:
        """The source's label, recorded on every acquisition it finds."""
        ...

    def search(self, aoi: BaseGeometry, start: date, end: date, kinds: Sequence[str]) -> list[Acquisition]:
        """Acquisitions of ``kinds`` intersecting ``aoi`` (EPSG:4326) sensed in [start, end] (DEM: any time)."""
        ...


HrefCheck = Callable[[str, str], str]
"""``check(href, where) -> href``: vets one href (``where`` names the item and asset for the message)."""
Fingerprint = Callable[[pystac.Item, tuple[tuple[str, str], ...]], str]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def is_gdal_prefix(href: str) -> bool:
    """True for a GDAL virtual-file path (``/vsicurl/…``, ``/vsizip/…``)."""
    return href.lstrip().lower().startswith("/vsi")


def has_scheme(text: str) -> bool:
    """True when ``text`` starts with a URL scheme (``http:``, ``file:`` …)."""
    return _SCHEME.match(text) is not None


def local_href(root: Path) -> HrefCheck:
    """The href check of a local catalog under ``root``: plain paths (or ``file:``) resolving inside it.

    The path is resolved (``..`` and symlinks), so ``../../etc/passwd``, an absolute path elsewhere
    or a symlink pointing out of the root is refused; the resolved path is returned.
    """
    base = Path(os.path.realpath(root))

    def check(href: str, where: str) -> str:
        if is_gdal_prefix(href):
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
        if is_gdal_prefix(href) or m is None or m.group(1).lower() not in schemes or "/vsi" in href.lower():
            hint = "; s3:// assets need GLACIAL_LAKES_ALLOW_S3=true" if href.lower().startswith("s3://") else ""
            raise SourceError(f"{where}: href {href!r} is not a {'/'.join(s + '://' for s in schemes)} URL{hint}")
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
    """The item's ``updated`` (else ``created``) time, the asset hrefs and any ``file:checksum``.

    The hrefs are the unsigned ones: a signed href changes with every token, its file does not.
    """
    parts = [str(item.properties.get("updated") or item.properties.get("created") or "")]
    for key, href in assets:
        parts.append(f"{key}={href}")
    for asset in item.assets.values():
        checksum = asset.extra_fields.get("file:checksum")
        if checksum:
            parts.append(f"{asset.href}#{checksum}")
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _stated_scaling(key: str, fields: Mapping[str, Any]) -> BandScaling | None:
    """The scale/offset one asset states (raster v2 on the asset, then its bands, then raster v1)."""
    candidates: list[tuple[Any, Any]] = [(fields.get("raster:scale"), fields.get("raster:offset"))]
    bands = fields.get("bands")
    if isinstance(bands, list) and bands and isinstance(bands[0], dict):
        candidates.append((bands[0].get("raster:scale"), bands[0].get("raster:offset")))
    raster_bands = fields.get("raster:bands")
    if isinstance(raster_bands, list) and raster_bands and isinstance(raster_bands[0], dict):
        candidates.append((raster_bands[0].get("scale"), raster_bands[0].get("offset")))
    for scale, offset in candidates:
        if _number(scale) is not None or _number(offset) is not None:
            return BandScaling(key, _number(scale), _number(offset))
    return None


def _canonical_assets(
    aliases: Mapping[str, tuple[str, ...]], item: pystac.Item, check: HrefCheck
) -> tuple[tuple[tuple[str, str], ...], tuple[BandScaling, ...]]:
    found: list[tuple[str, str]] = []
    scaling: list[BandScaling] = []
    for canonical, spellings in aliases.items():
        for spelling in spellings:
            asset = item.assets.get(spelling)
            if asset is not None:
                where = f"item {item.id!r} asset {spelling!r}"
                _any_href(asset.href, where)  # the raw href: pystac turns "/vsicurl/http://x" into a path
                found.append((canonical, check(asset.get_absolute_href() or asset.href, where)))
                if (stated := _stated_scaling(canonical, asset.extra_fields)) is not None:
                    scaling.append(stated)
                break
    return tuple(found), tuple(scaling)


def _any_href(href: str, where: str) -> str:
    """The check of :func:`item_to_acquisition` when none is given: GDAL prefixes only."""
    if is_gdal_prefix(href):
        raise SourceError(f"{where}: href {href!r} is a GDAL /vsi… path; catalogs may not name one")
    return href


def _boa_offset_applied(props: Mapping[str, Any]) -> bool | None:
    for key in ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied"):
        value = props.get(key)
        if isinstance(value, bool):
            return value
    return None


def item_to_acquisition(
    item: pystac.Item,
    kind: str,
    source: str,
    check: HrefCheck = _any_href,
    fingerprint: Fingerprint | None = None,
    aliases: Mapping[str, tuple[str, ...]] | None = None,
) -> Acquisition:
    """Our record of one STAC item (pure apart from resolving relative hrefs).

    ``check`` vets (and may rewrite) every asset href; ``fingerprint`` says what the inputs are
    (default: :func:`remote_fingerprint`); ``aliases`` are the catalog's asset keys of ``kind``
    (default: every spelling, :data:`tasks.catalogs.STATIC`). Raises SourceError naming the item
    when it has no time.
    """
    props = item.properties
    try:
        when = item.datetime or datetime.fromisoformat(str(props["start_datetime"]).replace("Z", "+00:00"))
    except (KeyError, ValueError) as exc:
        raise SourceError(f"item {item.id!r} of {source}: no usable datetime ({exc})") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    baseline = props.get("s2:processing_baseline") or props.get("processing:version")
    keys = STATIC.aliases(kind) if aliases is None else aliases
    assets, scaling = _canonical_assets(keys, item, check)
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
        scaling=scaling,
        boa_offset_applied=_boa_offset_applied(props),
        metadata=asset_metadata(item, kind, keys),
    )


def in_window(when: datetime, start: date, end: date) -> bool:
    """``when`` (aware) lies in the UTC days [start, end]."""
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
        and (a.kind == "DEM" or in_window(a.sensing_time, start, end))
    ]
    return sorted(kept, key=lambda a: (a.sensing_time, a.product_id))


def shown_href(href: str) -> str:
    """The href as it may be logged or stored: an http(s) URL loses its query string (``?…``).

    Signed URLs carry their token there (Planetary Computer SAS): never written to the ledger,
    a log line or an error message.
    """
    if href.lower().startswith(("http://", "https://")) and "?" in href:
        return href.split("?", 1)[0] + "?…"
    return href


def ledger_href(acquisition: Acquisition) -> str | None:
    """The acquisition's first asset href as the catalog lists it (unsigned), for the ledger."""
    assets = acquisition.signing.unsigned if acquisition.signing is not None else acquisition.assets
    first = next(iter(dict(assets).values()), None)
    return None if first is None else shown_href(first)


_SIGNED_URL = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*", re.IGNORECASE)


def redact_urls(text: str) -> str:
    """``text`` with every http(s) URL's query string replaced by ``?…`` (see :func:`shown_href`)."""
    return _SIGNED_URL.sub(r"\1?…", text)
