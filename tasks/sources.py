"""Finding acquisitions: one ``AcquisitionSource`` protocol, STAC-backed implementations.

Every source returns the same frozen ``Acquisition`` records, with asset hrefs resolved to absolute
paths or URLs. Collections and asset keys of the public catalogs are mapped in one table
(``COLLECTION_KINDS``) so the rest of the pipeline only sees our kinds: S2L2A, S1GRD, S1RTC, DEM.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Protocol

import pystac
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from core.errors import SourceError  # bad input, not retryable

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
    "S1GRD": {"vv": ("vv", "VV"), "vh": ("vh", "VH")},
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


def _canonical_assets(kind: str, item: pystac.Item) -> tuple[tuple[str, str], ...]:
    found: list[tuple[str, str]] = []
    for canonical, spellings in ASSET_ALIASES[kind].items():
        for spelling in spellings:
            asset = item.assets.get(spelling)
            if asset is not None:
                found.append((canonical, asset.get_absolute_href() or asset.href))
                break
    return tuple(found)


def item_to_acquisition(item: pystac.Item, kind: str, source: str) -> Acquisition:
    """Our record of one STAC item (pure apart from resolving relative hrefs)."""
    props = item.properties
    when = item.datetime or datetime.fromisoformat(str(props["start_datetime"]).replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    baseline = props.get("s2:processing_baseline") or props.get("processing:version")
    return Acquisition(
        product_id=item.id,
        kind=kind,
        platform=str(props.get("platform", "unknown")).lower(),
        sensing_time=when.astimezone(UTC),
        footprint=shape(item.geometry) if item.geometry else None,
        assets=_canonical_assets(kind, item),
        source=source,
        processing_baseline=str(baseline) if baseline is not None else None,
        cloud_cover=props.get("eo:cloud_cover"),
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

    def search(self, aoi: BaseGeometry, start: date, end: date, kinds: Sequence[str]) -> list[Acquisition]:
        """Acquisitions of ``kinds`` intersecting ``aoi`` (EPSG:4326) sensed in [start, end] (DEM: any time)."""
        catalog = pystac.Catalog.from_file(str(self._catalog_file()))
        found: list[Acquisition] = []
        for collection in catalog.get_children():
            kind = COLLECTION_KINDS.get(collection.id)
            if kind is None or kind not in kinds:
                continue
            found.extend(item_to_acquisition(item, kind, self.name) for item in collection.get_items(recursive=True))
        return filter_acquisitions(found, aoi, start, end, kinds)


@dataclass(frozen=True)
class StacApiSource:
    """A STAC API (Copernicus Data Space, Earth Search, Planetary Computer) through pystac-client."""

    url: str
    max_items: int = 500

    @property
    def name(self) -> str:
        """The source URI, ``stac:URL``."""
        return f"stac:{self.url}"

    def search(self, aoi: BaseGeometry, start: date, end: date, kinds: Sequence[str]) -> list[Acquisition]:
        """Acquisitions of ``kinds`` intersecting ``aoi`` (EPSG:4326) sensed in [start, end] (DEM: any time)."""
        from pystac_client import Client  # imported here: only this source needs it

        client = Client.open(self.url)
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
                raise
            found.extend(item_to_acquisition(item, kind, self.name) for item in items)
        return filter_acquisitions(found, aoi, start, end, kinds)


def source_from_uri(uri: str) -> AcquisitionSource:
    """``local:DIR`` | ``stac:URL`` → a source. Raises SourceError naming the input otherwise."""
    scheme, _, rest = uri.partition(":")
    if scheme == "local" and rest:
        return LocalStacSource(Path(rest).expanduser().resolve())
    if scheme == "stac" and rest.startswith(("http://", "https://")):
        return StacApiSource(rest)
    raise SourceError(f"unsupported --source {uri!r}: expected local:DIR or stac:URL")
