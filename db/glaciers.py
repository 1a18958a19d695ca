"""Glacier outlines per AOI (RGI 6 / RGI 7 files) and the glacier context of the lakes.

Import (:func:`import_glaciers`): the layer must declare a CRS (any: it is reprojected to
EPSG:4326); every outline is repaired (:func:`db.geometry.as_multipolygon`). The glaciers kept
are those whose outline intersects the AOI's outline, **whole, not clipped**: a clip would draw a
false glacier edge along the AOI border, and the lakes there would read as in contact with it.
Ids and names come from the RGI 6 fields ``RGIId`` / ``Name`` (``RGI50-`` / ``RGI60-`` ids), the
RGI 7 fields ``rgi_id`` / ``glac_name``, or a GLIMS-style ``glac_id`` (scheme ``other``). The
source is ``<scheme>:<file name>``; its **coverage** is where its outlines are taken as complete:
the AOI's outline (``coverage="aoi"``, the default: configuring glaciers for an AOI claims the
file holds all of them there), or the AOI outline within the bounding box of every outline of the
file (``coverage="extent"``, for a file that holds only part of the AOI's glaciers, such as a
sample). Lakes outside every coverage are ``unknown``. Re-importing a source for an AOI replaces
its glaciers in one transaction.

Context (SQL: ``inventory.glacier_context(geometry)``, view ``lake_glacier_context``; revision
0012): distance to the nearest glacier, geodesic on the WGS 84 spheroid (PostGIS ``geography``),
metres; contact when within ``contact_tolerance_m`` (default 10 m, one 10 m pixel); lake type

* ``supraglacial``: at least ``supraglacial_min_fraction`` (default 0.5) of the lake's area lies
  inside glacier outlines;
* ``proglacial_contact``: in contact (touching, or within the tolerance), not supraglacial;
* ``unconnected_glacial``: not in contact, within ``unconnected_max_distance_m`` (default 2 km);
* ``non_glacial``: farther;
* ``unknown``: no imported source covers the lake (never ``non_glacial`` by default).

The thresholds live in ``inventory.glacier_context_settings`` (one row):
:func:`context_settings`, :func:`set_context_settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import geopandas as gpd
import pandas as pd
import pyogrio
import pyogrio.errors
import shapely
from shapely import wkb
from shapely.geometry import MultiPolygon, box
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Engine, text

from core.errors import InputError
from db.geometry import as_multipolygon
from db.importer import file_digest
from db.lake_types import LAKE_TYPES
from db.queries import check_aoi_known
from db.schema import SCHEMA, SRID

__all__ = [
    "LAKE_TYPES",
    "ContextSettings",
    "GlacierFileError",
    "GlacierImport",
    "GlacierOutlines",
    "context_settings",
    "import_glaciers",
    "read_glaciers",
    "set_context_settings",
]

_ID_FIELDS = (("RGIId", "Name"), ("rgi_id", "glac_name"), ("glac_id", "glac_name"))
"""(id field, name field) of RGI 5/6, RGI 7 and GLIMS-style files, in the order they are tried."""


class GlacierFileError(InputError):
    """A glacier outline file is unusable (missing, unreadable, no CRS, no id field, nothing in the AOI)."""


@dataclass(frozen=True)
class GlacierOutlines:
    """Glacier outlines read from one file (EPSG:4326, repaired)."""

    scheme: str
    """RGI50 | RGI60 | RGI70 | other."""
    ids: tuple[str, ...]
    names: tuple[str | None, ...]
    outlines: tuple[MultiPolygon, ...]
    extent: tuple[float, float, float, float]
    """Bounding box of every outline of the file (lon/lat degrees)."""
    source_crs: str
    skipped_empty: int
    """Features without geometry, or nothing polygonal after repair."""


@dataclass(frozen=True)
class GlacierImport:
    """What :func:`import_glaciers` did."""

    aoi_name: str
    source: str
    scheme: str
    glaciers: int
    """Outlines stored for the AOI (those intersecting its outline)."""
    in_file: int
    """Usable outlines in the file."""
    replaced: int
    """Outlines of an earlier import of the same source that were removed."""
    source_crs: str
    coverage: str
    """``aoi`` or ``extent`` (see :func:`import_glaciers`)."""


@dataclass(frozen=True)
class ContextSettings:
    """Thresholds of the lake-type rule (``inventory.glacier_context_settings``)."""

    contact_tolerance_m: float
    """A lake within this geodesic distance of a glacier outline is in contact, m."""
    unconnected_max_distance_m: float
    """A lake not in contact but within this distance is unconnected glacial, m."""
    supraglacial_min_fraction: float
    """Share of the lake's area inside glacier outlines from which it is supraglacial, (0, 1]."""


def _text(value: object) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    out = str(value).strip()
    return out or None


def _scheme(id_field: str, ids: list[str]) -> str:
    if id_field == "rgi_id":
        return "RGI70"
    if id_field == "RGIId":
        prefixes = {i.split("-", 1)[0] for i in ids}
        return prefixes.pop() if len(prefixes) == 1 and prefixes <= {"RGI50", "RGI60"} else "other"
    return "other"


def read_glaciers(path: Path, *, layer: str | None = None) -> GlacierOutlines:
    """Read, reproject and repair the glacier outlines of an RGI 6 / RGI 7 (or GLIMS-style) file.

    Raises:
        GlacierFileError: no such file, not a vector file, no CRS, no id field, no outline (one
            line naming the file).
    """
    if not path.is_file():
        raise GlacierFileError(f"{path}: no such file")
    try:
        frame = gpd.read_file(path, layer=layer, engine="pyogrio")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, pyogrio.errors.FieldError) as exc:
        reason = str(exc).split(";")[0].strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise GlacierFileError(f"{path.name}: not a glacier outline file GDAL can read ({reason})") from exc
    if frame.crs is None:
        raise GlacierFileError(f"{path.name}: the layer has no CRS; assign one (e.g. ogr2ogr -a_srs) and import again")
    source_crs = frame.crs.to_string()
    # Field names as the schemes spell them, matched without case (older RGI files write RGIID).
    columns = {str(c).casefold(): str(c) for c in frame.columns if c != frame.geometry.name}
    fields = next(((i, n) for i, n in _ID_FIELDS if i.casefold() in columns), None)
    if fields is None:
        raise GlacierFileError(f"{path.name}: no glacier id field (RGIId for RGI 6, rgi_id for RGI 7, or glac_id)")
    scheme_field = fields[0]
    id_field, name_field = columns[fields[0].casefold()], columns.get(fields[1].casefold(), "")
    if frame.crs.to_epsg() != SRID:
        frame = frame.to_crs(SRID)
    ids: list[str] = []
    names: list[str | None] = []
    outlines: list[MultiPolygon] = []
    skipped = 0
    name_values = frame[name_field] if name_field in frame.columns else [None] * len(frame)
    for k, (geometry, gid, name) in enumerate(zip(frame.geometry, frame[id_field], name_values, strict=True)):
        outline = as_multipolygon(geometry) if isinstance(geometry, BaseGeometry) else None
        if outline is None:
            skipped += 1
            continue
        ids.append(_text(gid) or f"{path.stem}#{k}")  # an outline without id keeps its place in the file
        names.append(_text(name))
        outlines.append(outline)
    if not outlines:
        raise GlacierFileError(f"{path.name}: no glacier outline (polygon) in the layer")
    x0, y0, x1, y1 = shapely.total_bounds(outlines).tolist()
    return GlacierOutlines(
        _scheme(scheme_field, ids), tuple(ids), tuple(names), tuple(outlines), (x0, y0, x1, y1), source_crs, skipped
    )


_DELETE = text(f"DELETE FROM {SCHEMA}.glacier_source WHERE aoi_id = :aoi AND source = :source RETURNING n_glaciers")
_INSERT_SOURCE = text(
    f"INSERT INTO {SCHEMA}.glacier_source (aoi_id, source, scheme, sha256, source_crs, n_glaciers, coverage) "
    "VALUES (:aoi, :source, :scheme, :sha256, :crs, :n, "
    f"ST_Multi(ST_CollectionExtract(ST_MakeValid(ST_GeomFromWKB(:coverage, {SRID})), 3))) RETURNING source_id"
)
# centre and reach bound the distance from a lake (revision 0012's glacier_context): the reach is
# the geodesic distance to the farthest vertex (edges of a few hundred metres at most bow by
# millimetres), plus a metre.
_INSERT_GLACIER = text(
    f"INSERT INTO {SCHEMA}.glacier (aoi_id, source_id, source, rgi_id, name, geom, centre, reach_m) "
    "SELECT :aoi, :sid, :source, :rgi_id, :name, g, c, "
    "1.0 + (SELECT max(ST_Distance(geography(c), geography(p.geom))) FROM ST_DumpPoints(g) AS p) "
    f"FROM (SELECT ST_GeomFromWKB(:geom, {SRID}) AS g) AS o CROSS JOIN LATERAL (SELECT ST_Centroid(o.g) AS c) AS k"
)


def import_glaciers(
    engine: Engine,
    path: Path,
    *,
    aoi_name: str,
    layer: str | None = None,
    coverage: Literal["aoi", "extent"] = "aoi",
) -> GlacierImport:
    """Store the outlines of ``path`` that intersect AOI ``aoi_name``'s outline, replacing an earlier import.

    Args:
        engine: engine on a migrated inventory (owner or writer role).
        path: RGI 6 / RGI 7 outline file (shapefile, GeoPackage, GeoJSON …; any CRS).
        aoi_name: an AOI of the inventory.
        layer: layer of a multi-layer file; None reads the first.
        coverage: where the outlines are complete: the AOI's outline, or its part within the
            file's extent (see the module docstring).

    Returns:
        What was stored, and how many outlines of the same source it replaced.

    Raises:
        GlacierFileError: see :func:`read_glaciers`; or no outline of the file lies in the AOI.
        core.errors.AoiError: the AOI is unknown.
        core.errors.InputError: ``coverage`` is neither ``"aoi"`` nor ``"extent"``.
    """
    if coverage not in ("aoi", "extent"):
        raise InputError(f"coverage must be 'aoi' or 'extent', not {coverage!r}")
    check_aoi_known(engine, aoi_name)
    read = read_glaciers(path, layer=layer)
    with engine.connect() as conn:
        aoi_id, outline_wkb = conn.execute(
            text(f"SELECT aoi_id, ST_AsBinary(geom) FROM {SCHEMA}.aoi WHERE name = :n"), {"n": aoi_name}
        ).one()
    aoi_outline = wkb.loads(bytes(outline_wkb))
    shapely.prepare(aoi_outline)
    keep = [k for k, g in enumerate(read.outlines) if aoi_outline.intersects(g)]
    if not keep:
        raise GlacierFileError(
            f"{path.name}: none of its {len(read.outlines)} glacier outlines lies in AOI {aoi_name!r}"
        )
    covered = as_multipolygon(aoi_outline if coverage == "aoi" else aoi_outline.intersection(box(*read.extent)))
    if covered is None:  # an outline intersects the AOI, so only a degenerate touch gets here
        raise GlacierFileError(f"{path.name}: its extent only touches AOI {aoi_name!r}")
    source = f"{read.scheme}:{path.name}"
    rows = [
        {"aoi": aoi_id, "source": source, "rgi_id": read.ids[k], "name": read.names[k], "geom": read.outlines[k].wkb}
        for k in keep
    ]
    with engine.begin() as conn:
        replaced = sum(int(n) for (n,) in conn.execute(_DELETE, {"aoi": aoi_id, "source": source}))
        source_id = conn.execute(
            _INSERT_SOURCE,
            {
                "aoi": aoi_id,
                "source": source,
                "scheme": read.scheme,
                "sha256": file_digest(path),
                "crs": read.source_crs,
                "n": len(rows),
                "coverage": covered.wkb,
            },
        ).scalar_one()
        conn.execute(_INSERT_GLACIER, [r | {"sid": source_id} for r in rows])
    return GlacierImport(
        aoi_name, source, read.scheme, len(rows), len(read.outlines), replaced, read.source_crs, coverage
    )


_SETTINGS = ("contact_tolerance_m", "unconnected_max_distance_m", "supraglacial_min_fraction")


def context_settings(engine: Engine) -> ContextSettings:
    """The thresholds the lake-type rule uses now."""
    with engine.connect() as conn:
        row = conn.execute(text(f"SELECT {', '.join(_SETTINGS)} FROM {SCHEMA}.glacier_context_settings")).one()
    return ContextSettings(*(float(v) for v in row))


def set_context_settings(engine: Engine, changes: Mapping[str, float]) -> ContextSettings:
    """Change some thresholds (names of :class:`ContextSettings`); the others keep their values.

    Raises:
        core.errors.InputError: an unknown name, or values the rule refuses (negative, a contact
            tolerance above the unconnected distance, a fraction outside (0, 1]).
    """
    unknown = sorted(set(changes) - set(_SETTINGS))
    if unknown:
        raise InputError(f"glacier context settings: unknown {', '.join(unknown)} (known: {', '.join(_SETTINGS)})")
    merged = context_settings(engine).__dict__ | dict(changes)
    new = ContextSettings(**{k: float(v) for k, v in merged.items()})
    if not (0 <= new.contact_tolerance_m <= new.unconnected_max_distance_m and 0 < new.supraglacial_min_fraction <= 1):
        raise InputError(
            f"glacier context settings {new.__dict__}: need 0 <= contact tolerance <= unconnected distance "
            "and a supraglacial fraction in (0, 1]"
        )
    with engine.begin() as conn:
        conn.execute(
            text(f"UPDATE {SCHEMA}.glacier_context_settings SET {', '.join(f'{k} = :{k}' for k in _SETTINGS)}"),
            new.__dict__,
        )
    return new
