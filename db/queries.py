"""Read helpers over the inventory (used by the CLI: export, summaries).

Geometries come back in EPSG:4326 (as stored); areas in m², lengths in m (local UTM,
computed by the pipeline). Times are UTC.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import geopandas as gpd
import sqlalchemy as sa

from core.errors import AoiError
from db.attributes import ATTRIBUTES
from db.schema import SCHEMA, SRID

GLACIER_CONTEXT_COLUMNS = ("glacier_id", "rgi_id", "glacier_distance_m", "glacier_contact", "lake_type")
"""The glacier context of a lake (view ``lake_glacier_context``, revision 0012; rule in :mod:`db.glaciers`):
nearest glacier's id and RGI id, geodesic distance to it (m), contact (bool), lake type. NULL
(and ``lake_type`` ``unknown``) where no imported glacier outlines cover the lake."""

LAKE_COLUMNS = (
    "lake_id",
    "aoi_names",
    "status",
    "change_kind",
    "valid_from",
    *ATTRIBUTES,
    "model_version",
    "first_seen",
    "last_seen",
    "n_observations",
    *GLACIER_CONTEXT_COLUMNS,
    "geom",
)
"""Columns of :func:`lakes_as_of`, current or historical alike (the attributes of :mod:`db.attributes`,
then the glacier context: an outline of the past against the glaciers imported now).

``aoi_names``: the AOIs whose outline the lake's outline intersects, sorted, comma-separated.
``model_version``: the segmentation model of the scene that opened the lake's version (every
export names it). ``first_seen`` / ``last_seen``: first and last present observation, and
``n_observations`` the observations (present or seen dry), up to the instant asked for."""


def in_aoi(geom: str, aoi_param: str = "aoi") -> str:
    """SQL: the outline ``geom`` (EPSG:4326) belongs to AOI ``:aoi_param`` (true for every lake when it is NULL).

    A lake belongs to every AOI whose outline its outline intersects: identity is spatial, an AOI
    is a unit of processing, not an owner of lakes. Change together: ``aoi_names`` in the views and
    ``lakes_as_of`` of ``migrations/versions/0006_spatial_lake_identity.py`` apply the same rule;
    ``tests/db/test_one_lake_one_id.py`` checks the export against the views.
    """
    return (
        f"(CAST(:{aoi_param} AS text) IS NULL OR EXISTS (SELECT 1 FROM {SCHEMA}.aoi AS m "
        f"WHERE m.name = :{aoi_param} AND m.geom && {geom} AND ST_Intersects(m.geom, {geom})))"
    )


_CURRENT = f"""
SELECT {", ".join(f"c.{k}" for k in LAKE_COLUMNS)}
FROM {SCHEMA}.current_lakes AS c
WHERE {in_aoi("c.geom")}
ORDER BY c.lake_id
"""

_AS_OF = f"""
SELECT {", ".join(f"f.{k}" for k in LAKE_COLUMNS)}
FROM {SCHEMA}.lakes_as_of(:when) AS f
WHERE {in_aoi("f.geom")}
ORDER BY f.lake_id
"""


def _utc(when: datetime) -> datetime:
    # A naive datetime is read as UTC (sensing times are UTC), not as the server's zone.
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def lakes_as_of(engine: sa.Engine, when: datetime | None = None, aoi: str | None = None) -> gpd.GeoDataFrame:
    """The active lakes of the inventory at ``when`` (None: now), optionally of one AOI, each lake once.

    Args:
        engine: engine on a migrated inventory database.
        when: instant in sensing time; naive values are taken as UTC. None returns the
            current lakes (``inventory.current_lakes``).
        aoi: AOI name: the lakes whose outline (as of ``when``) intersects its outline; None
            for all lakes.

    Returns:
        One row per lake with :data:`LAKE_COLUMNS`, geometry column ``geom`` in EPSG:4326,
        ordered by ``lake_id``; empty (same columns) when nothing matches.
    """
    query = _CURRENT if when is None else _AS_OF
    params: dict[str, Any] = {"aoi": aoi}
    if when is not None:
        params["when"] = _utc(when)
    with engine.connect() as conn:
        frame = gpd.read_postgis(sa.text(query), conn, geom_col="geom", params=params, crs=f"EPSG:{SRID}")
    return frame[list(LAKE_COLUMNS)]


def aoi_names(engine: sa.Engine) -> list[str]:
    """Names of every AOI in the inventory, sorted."""
    with engine.connect() as conn:
        return [str(n) for (n,) in conn.execute(sa.text(f"SELECT name FROM {SCHEMA}.aoi ORDER BY name"))]


def aoi_geometry(engine: sa.Engine, name: str) -> dict[str, Any]:
    """The outline of AOI ``name`` as a GeoJSON geometry (EPSG:4326).

    Raises:
        core.errors.AoiError: ``name`` is unknown (see :func:`check_aoi_known`).
    """
    check_aoi_known(engine, name)
    with engine.connect() as conn:
        text = conn.execute(sa.text(f"SELECT ST_AsGeoJSON(geom) FROM {SCHEMA}.aoi WHERE name = :n"), {"n": name})
        geometry: dict[str, Any] = json.loads(text.scalar_one())
    return geometry


def check_aoi_known(engine: sa.Engine, name: str) -> None:
    """Refuse an AOI name the inventory does not hold, listing (up to five of) those it does.

    Raises:
        core.errors.AoiError: ``name`` is unknown.
    """
    known = aoi_names(engine)
    if name in known:
        return
    listed = ", ".join(known[:5]) + (f" … ({len(known)} in all)" if len(known) > 5 else "")
    raise AoiError(f"--aoi {name!r}: no such AOI in the inventory (known: {listed or 'none yet'})")


def inventory_summary(engine: sa.Engine, aoi: str | None = None) -> dict[str, Any]:
    """Counts over the inventory, optionally restricted to one AOI (its lakes: :func:`in_aoi`; its scenes).

    Returns:
        ``{"aoi": aoi, "lakes": {status: n}, "versions": {change_kind: n},
        "observations": n, "absent_observations": n, "scenes": n}``; missing keys in the
        inner dicts mean zero.
    """
    lakes_sql = f"""
        SELECT l.status, count(*) FROM {SCHEMA}.lake AS l
        WHERE {in_aoi("l.geom")} GROUP BY l.status ORDER BY l.status
    """
    versions_sql = f"""
        SELECT v.change_kind, count(*) FROM {SCHEMA}.lake_version AS v
        JOIN {SCHEMA}.lake AS l ON l.lake_id = v.lake_id
        WHERE {in_aoi("l.geom")} GROUP BY v.change_kind ORDER BY v.change_kind
    """
    observations_sql = f"""
        SELECT count(*), count(*) FILTER (WHERE NOT o.present) FROM {SCHEMA}.lake_observation AS o
        JOIN {SCHEMA}.lake AS l ON l.lake_id = o.lake_id
        WHERE {in_aoi("l.geom")}
    """
    scenes_sql = f"""
        SELECT count(*) FROM {SCHEMA}.scene AS s JOIN {SCHEMA}.aoi AS a ON a.aoi_id = s.aoi_id
        WHERE (CAST(:aoi AS text) IS NULL OR a.name = :aoi)
    """
    params = {"aoi": aoi}
    with engine.connect() as conn:
        lakes = {status: int(n) for status, n in conn.execute(sa.text(lakes_sql), params)}
        versions = {kind: int(n) for kind, n in conn.execute(sa.text(versions_sql), params)}
        observations, absent = conn.execute(sa.text(observations_sql), params).one()
        scenes = conn.execute(sa.text(scenes_sql), params).scalar_one()
    return {
        "aoi": aoi,
        "lakes": lakes,
        "versions": versions,
        "observations": int(observations),
        "absent_observations": int(absent),
        "scenes": int(scenes),
    }


def versions_per_lake(engine: sa.Engine) -> dict[int, int]:
    """Number of history versions of every lake (lakes without versions map to 0)."""
    sql = f"""
        SELECT l.lake_id, count(v.version_id) FROM {SCHEMA}.lake AS l
        LEFT JOIN {SCHEMA}.lake_version AS v ON v.lake_id = l.lake_id
        GROUP BY l.lake_id ORDER BY l.lake_id
    """
    with engine.connect() as conn:
        return {int(lake_id): int(n) for lake_id, n in conn.execute(sa.text(sql))}


GROWTH_COLUMNS = (
    "lake_id",
    "aoi_names",
    "status",
    "n_obs",
    "first_seen",
    "last_seen",
    "area_m2",
    "area_change_m2",
    "area_change_pct",
    "growth_rate_m2_per_year",
    "growth_rate_ci_low",
    "growth_rate_ci_high",
    "scene_ids",
    "s2_product_ids",
    "model_versions",
    "model_version",
    "geom",
)
"""Columns of the view ``inventory.lake_growth`` (:func:`lake_growth`)."""


def lake_growth(engine: sa.Engine, aoi: str | None = None) -> gpd.GeoDataFrame:
    """Growth of every lake (not superseded), optionally of one AOI (:func:`in_aoi`), by ``lake_id``.

    ``n_obs``: present observations of current scenes, one per sensing time (UTC);
    ``area_change_m2`` / ``area_change_pct``: the current version against the previous one (m²,
    % of its water area); ``growth_rate_m2_per_year``: the Theil–Sen slope of area over time
    (m² per year of 365.25 days) over those observations, with its 95 % confidence interval
    ``growth_rate_ci_low`` … ``growth_rate_ci_high`` (Sen 1968; as ``scipy.stats.theilslopes``),
    NULL with fewer than two observations; source scenes, Sentinel-2 products and model versions.
    Geometry ``geom`` EPSG:4326.
    """
    sql = f"SELECT {', '.join(f'g.{k}' for k in GROWTH_COLUMNS)} FROM {SCHEMA}.lake_growth AS g "
    sql += f"WHERE {in_aoi('g.geom')} ORDER BY g.lake_id"
    with engine.connect() as conn:
        frame = gpd.read_postgis(sa.text(sql), conn, geom_col="geom", params={"aoi": aoi}, crs=f"EPSG:{SRID}")
    return frame[list(GROWTH_COLUMNS)]
