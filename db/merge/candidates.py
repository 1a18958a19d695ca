"""The lakes a scene may continue or see dry, fetched in one binary query, and the dry ones.

Outlines arrive as EPSG:4326 WKB; history tips (status, current area m², last seen / observed as
microseconds since the epoch) come with them, column by column, for the fast path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Connection, select

from db.geometry import project
from db.history import HistoryTips
from db.identity import absent_lakes
from db.merge.sql import MICROS
from db.records import MergeConfig
from db.schema import SCHEMA, SRID, lake_lineage


@dataclass(frozen=True)
class Candidates:
    """Lakes a scene may continue or see dry: outlines (EPSG:4326) and history tips, by lake id."""

    geoms: dict[int, BaseGeometry] = field(default_factory=dict)
    position: dict[int, int] = field(default_factory=dict)
    """Lake id → index into ``tips``."""
    tips: HistoryTips = field(default_factory=lambda: HistoryTips.of(()))

    def status(self, lake_id: int) -> str:
        """Status of the lake's current version (``active`` / ``disappeared``)."""
        return str(self.tips.status[self.position[lake_id]])

    def area(self, lake_id: int) -> float:
        """Area of the lake's current version, m² (UTM)."""
        return float(self.tips.area_m2[self.position[lake_id]])


CANDIDATES_SQL = f"""
SELECT l.lake_id, ST_AsBinary(l.geom), l.status, l.area_m2, {MICROS.format("l.last_seen")},
       {MICROS.format("l.last_observed")}
FROM {SCHEMA}.lake AS l
WHERE l.geom && ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, {SRID}) AND l.status <> 'superseded'
  AND l.lake_id NOT IN (SELECT parent_lake_id FROM {SCHEMA}.lake_lineage
                        WHERE kind = 'merged' AND sensing_time <= %(t)s)
  AND l.lake_id NOT IN (SELECT child_lake_id FROM {SCHEMA}.lake_lineage
                        WHERE kind = 'split' AND sensing_time > %(t)s)
  AND {{where}}
ORDER BY l.lake_id
{{lock}}
"""
"""Lakes in a bounding box (EPSG:4326), of any AOI, that existed at ``t``: not absorbed by then, not
split off later. Identity is spatial: an AOI is a unit of processing, not an owner of lakes.

Two reads: the lakes inside the region of the scene's locked cells (:mod:`db.merge.locks`), which
no other merge can reach while the cells are held, as they are; and the others, which reach beyond
it, with ``FOR UPDATE`` in lake-id order, so that such a lake is merged by one scene at a time and
two merges take those rows in the same order (they queue rather than deadlock). Driver (psycopg)
parameters: run on a binary cursor, the outlines arrive as WKB."""

_REGION = f"ST_MakeEnvelope(%(r0)s, %(r1)s, %(r2)s, %(r3)s, {SRID})"
_INSIDE_SQL = CANDIDATES_SQL.format(where=f"l.geom @ {_REGION}", lock="")
_REACHING_SQL = CANDIDATES_SQL.format(where=f"NOT l.geom @ {_REGION}", lock="FOR UPDATE OF l")
_ALL_LOCKED_SQL = CANDIDATES_SQL.format(where="true", lock="FOR UPDATE OF l")


def driver(conn: Connection) -> Any:
    """The psycopg connection under ``conn`` (same transaction), for COPY and binary fetches."""
    return conn.connection.driver_connection


def fetch_candidates(
    conn: Connection, when: datetime, bounds: tuple[float, ...], locked: tuple[float, ...] | None = None
) -> Candidates:
    """Lakes in the bbox (EPSG:4326 x0, y0, x1, y1) that existed at ``when``, whichever AOI found them.

    ``locked``: the region of the cells the merge holds (:func:`db.merge.locks.lock_ground`); the
    lakes reaching beyond it are row-locked (all of them when None).
    """
    params: dict[str, object] = {"t": when, **dict(zip(("x0", "y0", "x1", "y1"), map(float, bounds), strict=True))}
    with driver(conn).cursor(binary=True) as cur:  # binary: the outlines arrive as raw WKB
        if locked is None:
            rows = cur.execute(_ALL_LOCKED_SQL, params).fetchall()
        else:
            params |= dict(zip(("r0", "r1", "r2", "r3"), map(float, locked), strict=True))
            reaching = cur.execute(_REACHING_SQL, params).fetchall()  # locked first: then read the rest
            rows = sorted(cur.execute(_INSIDE_SQL, params).fetchall() + reaching, key=lambda r: r[0])
    if not rows:
        return Candidates()
    ids, wkb, status, area, seen, observed = zip(*rows, strict=True)
    tips = HistoryTips(
        np.asarray(status, dtype=object),
        np.asarray(area, dtype=float),  # NULL → NaN
        np.asarray(seen, dtype=np.int64),
        np.asarray(observed, dtype=np.int64),
    )
    geoms = shapely.from_wkb(list(wkb)).tolist()
    return Candidates(dict(zip(ids, geoms, strict=True)), {i: k for k, i in enumerate(ids)}, tips)


def dry_lakes(
    unseen: Mapping[int, BaseGeometry],
    footprint: MultiPolygon,
    footprint_m: BaseGeometry,
    epsg: int,
    config: MergeConfig,
) -> list[int]:
    """Unseen candidates inside the footprint (cover measured in UTM, :func:`db.identity.absent_lakes`).

    ``footprint`` is the valid footprint in EPSG:4326, ``footprint_m`` the same in ``epsg``. Lakes
    the footprint does not even touch in EPSG:4326 are not projected: their cover is nil.
    """
    if not unseen:
        return []
    ids = np.asarray(list(unseen))
    geoms = np.asarray(list(unseen.values()), dtype=object)
    near = np.ones(len(ids), dtype=bool)
    if config.min_footprint_cover > 0:
        near = shapely.intersects(footprint, geoms)
    if not near.any():
        return []
    lakes_m = dict(zip(ids[near].tolist(), project(list(geoms[near]), epsg), strict=True))
    return absent_lakes(lakes_m, footprint_m, config.min_footprint_cover)


def lineage_since(conn: Connection, when: datetime) -> set[int]:
    """Lakes in a split or merge at or after ``when``: their history needs the whole series."""
    lin = lake_lineage
    rows = conn.execute(select(lin.c.parent_lake_id, lin.c.child_lake_id).where(lin.c.sensing_time >= when))
    return {int(i) for r in rows for i in r}
