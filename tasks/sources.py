"""Finding acquisitions: one ``AcquisitionSource`` protocol, STAC-backed implementations.

Every source returns the same frozen :class:`~tasks.acquisition.Acquisition` records. How each
catalog spells collections and asset keys is in :mod:`tasks.catalogs` (one table per catalog),
so the rest of the pipeline only sees our kinds: S2L2A, S1GRD, S1RTC, DEM.

* ``local:DIR`` — :class:`LocalStacSource`, a static catalog on disk (the demo writes one);
  its links and assets stay under its root.
* ``stac:URL`` — :class:`~tasks.stac_api.StacApiSource`, a STAC API (paging, back-off, signing).
* ``dhus:URL`` — :class:`~tasks.dhus.DhusSource`, a DHuS hub through sentinelsat (products
  downloaded into the data root, read as SAFE).

A catalog decides which files and URLs the flow reads, so its hrefs are constrained (see
:mod:`tasks.acquisition`). Every remote call has a timeout (:data:`REMOTE_TIMEOUT_S`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pystac
from shapely.geometry.base import BaseGeometry

from core.errors import SourceError  # bad input, not retryable
from tasks.acquisition import (
    REMOTE_TIMEOUT_S,
    Acquisition,
    AcquisitionSource,
    BandScaling,
    HrefCheck,
    TransientSourceError,
    filter_acquisitions,
    has_scheme,
    is_gdal_prefix,
    item_to_acquisition,
    local_fingerprint,
    local_href,
    remote_fingerprint,
    remote_href,
)
from tasks.catalogs import STATIC
from tasks.dhus import DhusOptions, DhusSource
from tasks.safe_source import DEM_CATALOG_DIR, SafeSource
from tasks.stac_api import StacApiOptions, StacApiSource

__all__ = [
    "ASSET_ALIASES",
    "COLLECTION_KINDS",
    "MAX_CATALOG_DEPTH",
    "MAX_CATALOG_FILE_BYTES",
    "REMOTE_TIMEOUT_S",
    "Acquisition",
    "AcquisitionSource",
    "BandScaling",
    "HrefCheck",
    "LocalStacSource",
    "StacApiOptions",
    "StacApiSource",
    "TransientSourceError",
    "check_source",
    "filter_acquisitions",
    "item_to_acquisition",
    "local_fingerprint",
    "local_href",
    "remote_fingerprint",
    "remote_href",
    "source_from_uri",
]

COLLECTION_KINDS = STATIC.collections
"""Collection id (as the public catalogs spell it) → our kind: what a static catalog is read for."""
ASSET_ALIASES = STATIC.assets
"""Kind → canonical asset key → every catalog's spellings, tried in order (static catalogs)."""

MAX_CATALOG_FILE_BYTES = 16 * 1024 * 1024
"""Largest STAC JSON file (catalog, collection, item) read from a local catalog, bytes."""

MAX_CATALOG_DEPTH = 16
"""Deepest chain of child links followed from a local catalog's root."""


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
                if isinstance(link.target, str) and is_gdal_prefix(link.target):
                    raise SourceError(
                        f"{path} {link.rel} link: href {link.target!r} is a GDAL /vsi… path; catalogs may not name one"
                    )
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


def check_source(source: AcquisitionSource) -> None:
    """Opens and checks a source before a flow starts; SourceError naming the input otherwise.

    A local catalog is walked whole (every file parses, every link and asset href stays under its
    root); a STAC API's landing page must answer within :data:`REMOTE_TIMEOUT_S`, and its catalog
    layout name must be known.
    """
    if isinstance(source, LocalStacSource):
        source.acquisitions()
        return
    if isinstance(source, DhusSource):
        try:
            source.check()
        except (TimeoutError, TransientSourceError) as exc:  # for the edge, no answer is bad input
            raise SourceError(f"--source {exc}") from None
        return
    if isinstance(source, SafeSource):
        source.check()
        return
    if isinstance(source, StacApiSource):
        source.layout  # noqa: B018  # an unknown GLACIAL_LAKES_STAC_CATALOG fails here, before any request
        try:
            source.client()
        except (TimeoutError, TransientSourceError) as exc:  # for the edge, no answer is bad input
            raise SourceError(f"--source {exc}") from None


def source_from_uri(
    uri: str,
    *,
    check: bool = True,
    allow_s3: bool = False,
    options: StacApiOptions | None = None,
    dhus: DhusOptions | None = None,
) -> AcquisitionSource:
    """``local:DIR`` | ``stac:URL`` | ``dhus:URL`` → a source, checked by :func:`check_source` unless ``check=False``.

    ``options`` configure a STAC API (catalog layout, item cap, s3, token endpoint); without them
    the defaults, with ``allow_s3``. ``dhus`` configures a DHuS hub (data root, credentials, cap)
    and is required for ``dhus:URL``. Raises SourceError naming the input for an unknown scheme or
    a source that fails its check.
    """
    scheme, _, rest = uri.partition(":")
    source: AcquisitionSource
    if scheme == "local" and rest:
        if is_gdal_prefix(rest) or has_scheme(rest):
            raise SourceError(f"unsupported --source {uri!r}: local:DIR names a directory, not a URL or /vsi… path")
        source = LocalStacSource(Path(rest).expanduser().resolve())
    elif scheme == "safe" and rest and not (is_gdal_prefix(rest) or has_scheme(rest)):
        root = Path(rest).expanduser().resolve()  # SAFE products on disk; the DEM from root/dem (tasks.safe_source)
        source = SafeSource(root, LocalStacSource(root / DEM_CATALOG_DIR))
    elif scheme == "stac" and rest.startswith(("http://", "https://")):
        source = StacApiSource.from_options(rest, options or StacApiOptions(allow_s3=allow_s3))
    elif scheme == "dhus" and rest.startswith(("http://", "https://")):
        if dhus is None:
            raise SourceError(f"--source {uri!r}: a DHuS hub needs its options (data root, credentials)")
        if dhus.dem_source is not None and dhus.dem_source.startswith("dhus:"):
            raise SourceError(f"DEM source {dhus.dem_source!r}: a DHuS hub serves no DEM")
        dem = source_from_uri(dhus.dem_source, check=check, options=options) if dhus.dem_source else None
        source = DhusSource(rest, dhus, dem)
    else:
        raise SourceError(f"unsupported --source {uri!r}: expected local:DIR or stac:URL, or safe:DIR or dhus:URL")
    if check:
        check_source(source)
    return source
