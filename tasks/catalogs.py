"""How each public catalog spells what the pipeline reads: one table per catalog (pure data).

A :class:`CatalogLayout` maps a catalog's collection ids to our kinds (S2L2A, S1GRD, S1RTC, DEM)
and, per kind, our canonical asset keys (``B01`` … ``B12``, ``SCL``; ``vv``, ``vh``; ``data``) to
the catalog's asset keys, tried in order (the first present wins: finest resolution first).

* Earth Search v1 (Element 84) names S2 bands by common name (``coastal``, ``blue`` …
  ``rededge1..3``, ``nir``, ``nir08``, ``nir09``, ``swir16``, ``swir22``, ``scl``).
* Planetary Computer names them ``B01`` … ``SCL`` and serves hrefs that must be signed with a
  SAS token (``signing="planetary-computer"``, see :mod:`tasks.signing`).
* Copernicus Data Space names them per resolution (``B02_10m``, ``B05_20m``, ``SCL_20m``) behind
  ``s3://eodata/…`` hrefs that need S3 credentials (``s3_only=True``). Its S1 and DEM spellings
  are those of its STAC collections ``sentinel-1-grd`` and ``cop-dem-glo-30-dged-cog``; no real
  item of either was at hand to check them against.
* :data:`STATIC` is any other catalog (a local static catalog, a STAC API on an unknown host):
  every spelling above, no signing.

Earth Search's ``sentinel-2-c1-l2a`` holds the same scenes as ``sentinel-2-l2a`` under other ids;
only one of the two is searched, or each scene would be processed twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import urlsplit

from core.errors import SourceError

__all__ = [
    "CATALOGS",
    "CDSE",
    "EARTH_SEARCH_V1",
    "PLANETARY_COMPUTER",
    "STATIC",
    "CatalogLayout",
    "layout_for",
]

S2_CANONICAL = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")

AssetTable = Mapping[str, Mapping[str, tuple[str, ...]]]
"""kind → canonical asset key → the catalog's asset keys, in order of preference."""


def _frozen(table: dict[str, dict[str, tuple[str, ...]]]) -> AssetTable:
    return MappingProxyType({kind: MappingProxyType(keys) for kind, keys in table.items()})


@dataclass(frozen=True)
class CatalogLayout:
    """One catalog's collection ids and asset keys (see the module docstring)."""

    name: str
    """The value of ``GLACIAL_LAKES_STAC_CATALOG`` that selects it."""
    collections: Mapping[str, str]
    """Collection id → our kind. Searched in this order."""
    assets: AssetTable
    hosts: tuple[str, ...] = ()
    """URL hosts of the catalog's STAC API (how ``auto`` recognises it)."""
    signing: str | None = None
    """How asset hrefs are signed before they are read: ``"planetary-computer"`` or None."""
    s3_only: bool = False
    """Its data assets are ``s3://`` hrefs: reading them needs ``GLACIAL_LAKES_ALLOW_S3`` and credentials."""

    def aliases(self, kind: str) -> Mapping[str, tuple[str, ...]]:
        """Canonical asset key → the catalog's spellings, for one kind (empty for an unknown kind)."""
        return self.assets.get(kind, MappingProxyType({}))


_S1: dict[str, tuple[str, ...]] = {"vv": ("vv", "VV"), "vh": ("vh", "VH")}
# GRD DN is calibrated with the product's LUT and geocoded through its annotation (tasks.s1_grd).
_S1_GRD: dict[str, tuple[str, ...]] = {
    **_S1,
    "calibration-vv": ("schema-calibration-vv",),
    "calibration-vh": ("schema-calibration-vh",),
    "annotation-vv": ("schema-product-vv",),
    "annotation-vh": ("schema-product-vh",),
}

EARTH_SEARCH_V1 = CatalogLayout(
    name="earth-search-v1",
    collections=MappingProxyType({"sentinel-2-l2a": "S2L2A", "sentinel-1-grd": "S1GRD", "cop-dem-glo-30": "DEM"}),
    assets=_frozen(
        {
            "S2L2A": {
                "B01": ("coastal",),
                "B02": ("blue",),
                "B03": ("green",),
                "B04": ("red",),
                "B05": ("rededge1",),
                "B06": ("rededge2",),
                "B07": ("rededge3",),
                "B08": ("nir",),
                "B8A": ("nir08",),
                "B09": ("nir09",),
                "B11": ("swir16",),
                "B12": ("swir22",),
                "SCL": ("scl",),
            },
            "S1GRD": _S1_GRD,
            "DEM": {"data": ("data",)},
        }
    ),
    hosts=("earth-search.aws.element84.com",),
)

PLANETARY_COMPUTER = CatalogLayout(
    name="planetary-computer",
    collections=MappingProxyType(
        {
            "sentinel-2-l2a": "S2L2A",
            "sentinel-1-rtc": "S1RTC",
            "sentinel-1-grd": "S1GRD",
            "cop-dem-glo-30": "DEM",
        }
    ),
    assets=_frozen(
        {
            "S2L2A": {**{b: (b,) for b in S2_CANONICAL}, "SCL": ("SCL",)},
            "S1RTC": _S1,
            "S1GRD": _S1_GRD,
            "DEM": {"data": ("data",)},
        }
    ),
    hosts=("planetarycomputer.microsoft.com",),
    signing="planetary-computer",
)

CDSE = CatalogLayout(
    name="cdse",
    collections=MappingProxyType(
        {"sentinel-2-l2a": "S2L2A", "sentinel-1-grd": "S1GRD", "cop-dem-glo-30-dged-cog": "DEM"}
    ),
    assets=_frozen(
        {
            "S2L2A": {**{b: (f"{b}_10m", f"{b}_20m", f"{b}_60m") for b in S2_CANONICAL}, "SCL": ("SCL_20m",)},
            "S1GRD": _S1_GRD,
            "DEM": {"data": ("data", "DEM")},
        }
    ),
    hosts=("stac.dataspace.copernicus.eu", "catalogue.dataspace.copernicus.eu"),
    s3_only=True,
)


def _union(*layouts: CatalogLayout) -> tuple[Mapping[str, str], AssetTable]:
    collections: dict[str, str] = {}
    table: dict[str, dict[str, tuple[str, ...]]] = {}
    for layout in layouts:
        collections.update({c: k for c, k in layout.collections.items() if c not in collections})
        for kind, keys in layout.assets.items():
            for canonical, spellings in keys.items():
                known = table.setdefault(kind, {}).get(canonical, ())
                table[kind][canonical] = known + tuple(s for s in spellings if s not in known)
    # Static catalogs written by other tools: plain and lower-case band names too.
    for b in S2_CANONICAL:
        table["S2L2A"][b] = (b, *(s for s in (b.lower(),) + table["S2L2A"][b] if s != b))
    table["S2L2A"]["SCL"] = ("SCL", "scl", *(s for s in table["S2L2A"]["SCL"] if s not in ("SCL", "scl")))
    table["S1RTC"] = dict(_S1)
    collections.setdefault("sentinel-2-c1-l2a", "S2L2A")
    collections.setdefault("cop-dem-glo-90", "DEM")
    return MappingProxyType(collections), _frozen(table)


_STATIC_COLLECTIONS, _STATIC_ASSETS = _union(PLANETARY_COMPUTER, EARTH_SEARCH_V1, CDSE)

STATIC = CatalogLayout(name="static", collections=_STATIC_COLLECTIONS, assets=_STATIC_ASSETS)
"""Any other catalog: every collection id and asset spelling of the tables above, no signing."""

CATALOGS: Mapping[str, CatalogLayout] = MappingProxyType(
    {layout.name: layout for layout in (EARTH_SEARCH_V1, PLANETARY_COMPUTER, CDSE, STATIC)}
)
"""Every table by its ``GLACIAL_LAKES_STAC_CATALOG`` name."""


def layout_for(url: str, name: str = "auto") -> CatalogLayout:
    """The table of the STAC API at ``url``: ``name`` when given, else by the URL's host.

    ``auto`` picks the catalog whose host the URL names and :data:`STATIC` for any other host.

    Raises:
        SourceError: ``name`` is neither ``auto`` nor a key of :data:`CATALOGS`.
    """
    if name != "auto":
        if name not in CATALOGS:
            known = ", ".join(["auto", *CATALOGS])
            raise SourceError(f"unknown STAC catalog layout {name!r}: expected one of {known}")
        return CATALOGS[name]
    host = (urlsplit(url).hostname or "").lower()
    for layout in CATALOGS.values():
        if host in layout.hosts:
            return layout
    return STATIC
