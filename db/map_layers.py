"""What a map of the inventory draws: the lakes (active and gone), the AOI outlines, the area series.

Read-only, through the views and functions of the migrations (``current_lakes`` /
``lakes_as_of`` by way of :func:`db.queries.lakes_as_of`, ``lake_area_timeseries``) and the base
tables for the lakes no view lists (disappeared, superseded). Geometries EPSG:4326, areas m²
(local UTM, as measured by the pipeline), times UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import geopandas as gpd
import pandas as pd
import sqlalchemy as sa
from shapely import wkb
from shapely.geometry.base import BaseGeometry

from db.attributes import ATTRIBUTES
from db.queries import check_aoi_known, in_aoi, lakes_as_of
from db.schema import SCHEMA, SRID

__all__ = ["GROWTH_VIEW", "AoiOutline", "SeriesPoint", "aoi_outlines", "area_series", "current_growth", "map_lakes"]

GROWTH_VIEW = "lake_growth"
"""The view of per-lake growth figures, where the schema has one (column ``area_change_pct``)."""

_NAMES = f"(SELECT string_agg(n.name, ',' ORDER BY n.name) FROM {SCHEMA}.aoi AS n WHERE ST_Intersects(n.geom, {{g}}))"
"""``aoi_names`` as the views compute it (``migrations/versions/0006_spatial_lake_identity.py``)."""

# Lakes that are no longer active now: the lake row keeps the last known outline and attributes.
_GONE_NOW = f"""
SELECT l.lake_id, {_NAMES.format(g="l.geom")} AS aoi_names, l.status, lv.change_kind, lv.valid_from,
       {", ".join(f"l.{k}" for k in ATTRIBUTES)}, l.geom
FROM {SCHEMA}.lake AS l
LEFT JOIN LATERAL (
    SELECT v.change_kind, lower(v.valid) AS valid_from FROM {SCHEMA}.lake_version AS v
    WHERE v.lake_id = l.lake_id ORDER BY lower(v.valid) DESC LIMIT 1
) AS lv ON true
WHERE l.status <> 'active' AND l.geom IS NOT NULL AND {in_aoi("l.geom")}
ORDER BY l.lake_id
"""

# Lakes gone at an instant: their version valid then is a disappearance (a superseded lake has no
# version, so the history knows it at no instant). The version keeps the last known outline.
_GONE_AS_OF = f"""
SELECT v.lake_id, {_NAMES.format(g="COALESCE(v.geom, l.geom)")} AS aoi_names, v.status, v.change_kind,
       lower(v.valid) AS valid_from, {", ".join(f"v.{k}" for k in ATTRIBUTES)}, COALESCE(v.geom, l.geom) AS geom
FROM {SCHEMA}.lake_version AS v
JOIN {SCHEMA}.lake AS l ON l.lake_id = v.lake_id
WHERE v.valid @> CAST(:when AS timestamptz) AND v.status <> 'active' AND COALESCE(v.geom, l.geom) IS NOT NULL
  AND {in_aoi("COALESCE(v.geom, l.geom)")}
ORDER BY v.lake_id
"""


def map_lakes(engine: sa.Engine, when: datetime | None = None, aoi: str | None = None) -> gpd.GeoDataFrame:
    """Every lake a map of the inventory at ``when`` (None: now) draws, each once, by ``lake_id``.

    The active lakes are the export rows (:func:`db.queries.lakes_as_of`: every column it has,
    so attributes added there reach the map unchanged); the lakes gone by then follow with the
    same columns where they have them (``status`` ``disappeared``, or ``superseded`` for a lake
    only superseded scenes saw, which only the current map shows), with their last known outline
    and attributes; columns they lack are empty. Lakes without any outline are not drawn.

    Args:
        engine: engine on a migrated inventory database.
        when: instant in sensing time (UTC); None: the current inventory.
        aoi: AOI name (the lakes whose outline intersects its outline, :func:`db.queries.in_aoi`).

    Raises:
        core.errors.AoiError: ``aoi`` is unknown.
    """
    if aoi is not None:
        check_aoi_known(engine, aoi)
    active = lakes_as_of(engine, when, aoi)
    params: dict[str, Any] = {"aoi": aoi}
    if when is not None:
        params["when"] = when
    with engine.connect() as conn:
        gone = gpd.read_postgis(
            sa.text(_GONE_NOW if when is None else _GONE_AS_OF),
            conn,
            geom_col="geom",
            params=params,
            crs=f"EPSG:{SRID}",
        )
    if not len(gone):
        return active
    gone = gone.reindex(columns=list(active.columns))
    both = pd.concat([active, gone], ignore_index=True) if len(active) else gone
    frame = gpd.GeoDataFrame(both, geometry="geom", crs=f"EPSG:{SRID}")
    return frame.sort_values("lake_id", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class AoiOutline:
    """One AOI: name, outline (EPSG:4326) and the EPSG code of its UTM scene grid."""

    name: str
    geometry: BaseGeometry
    utm_epsg: int


def aoi_outlines(engine: sa.Engine, name: str | None = None) -> list[AoiOutline]:
    """The AOI ``name`` (None: every AOI, by name).

    Raises:
        core.errors.AoiError: ``name`` is unknown.
    """
    if name is not None:
        check_aoi_known(engine, name)
    sql = f"""
        SELECT name, ST_AsBinary(geom), utm_epsg FROM {SCHEMA}.aoi
        WHERE CAST(:n AS text) IS NULL OR name = :n ORDER BY name
    """
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql), {"n": name}).all()
    return [AoiOutline(str(n), wkb.loads(bytes(g)), int(e)) for n, g, e in rows]


@dataclass(frozen=True)
class SeriesPoint:
    """One observation of a lake: sensing time (UTC), water seen, water area (m², None when dry)."""

    sensing_time: datetime
    present: bool
    area_m2: float | None


def area_series(engine: sa.Engine, lake_ids: list[int], when: datetime | None = None) -> dict[int, list[SeriesPoint]]:
    """The area time series (``inventory.lake_area_timeseries``: current scenes only) of these lakes.

    Observations up to ``when`` (None: all), in sensing order (ties by observation id); a lake
    without observations maps to an empty list.
    """
    sql = f"""
        SELECT t.lake_id, t.sensing_time, t.present, t.area_m2 FROM {SCHEMA}.lake_area_timeseries AS t
        WHERE t.lake_id = ANY(:ids) AND (CAST(:when AS timestamptz) IS NULL OR t.sensing_time <= :when)
        ORDER BY t.lake_id, t.sensing_time, t.observation_id
    """
    out: dict[int, list[SeriesPoint]] = {int(i): [] for i in lake_ids}
    with engine.connect() as conn:
        for lake_id, at, present, area in conn.execute(sa.text(sql), {"ids": list(lake_ids), "when": when}):
            out[int(lake_id)].append(SeriesPoint(at, bool(present), None if area is None else float(area)))
    return out


def current_growth(engine: sa.Engine, lake_ids: list[int]) -> dict[int, float | None] | None:
    """``area_change_pct`` (% of the previous version's water area) of these lakes, now.

    Read from the view :data:`GROWTH_VIEW` where the schema has it with that column; None where it
    does not (the caller then computes a figure of its own and says so). A lake the view does not
    list maps to None.
    """
    exists = f"""
        SELECT 1 FROM information_schema.columns
        WHERE table_schema = '{SCHEMA}' AND table_name = '{GROWTH_VIEW}' AND column_name = 'area_change_pct'
    """
    sql = f"SELECT lake_id, area_change_pct FROM {SCHEMA}.{GROWTH_VIEW} WHERE lake_id = ANY(:ids)"
    with engine.connect() as conn:
        if conn.execute(sa.text(exists)).first() is None:
            return None
        out: dict[int, float | None] = {int(i): None for i in lake_ids}
        for lake_id, pct in conn.execute(sa.text(sql), {"ids": list(lake_ids)}):
            out[int(lake_id)] = None if pct is None else float(pct)
    return out
