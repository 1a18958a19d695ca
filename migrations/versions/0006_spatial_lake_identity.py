"""One lake, one id: lake identity is spatial, not per AOI.

Revision ID: 0006_spatial_lake_identity
Revises: 0005_geometry_validity_triggers
Create Date: 2026-12-01

Until now every AOI kept its own lakes (``lake.aoi_id``), so overlapping AOIs each held a copy of
the lakes they share. An AOI is a unit of processing and scheduling, not an owner of lakes: from
this revision the merge matches a scene against every lake on its ground, whichever AOI found it.

The upgrade, in one transaction:

1. **Merges the duplicates, deterministically.** Two lakes of different AOIs are the same lake when
   their current outlines overlap by at least :data:`MATCH_OVERLAP` of the smaller one's area (the
   merge's identity rule; areas on the spheroid, in m²). Each connected group with at most one lake
   per AOI becomes its smallest ``lake_id``: the others' observations and lineage move to it, their
   versions and lake rows go, and it is queued in ``lake_rebuild_queue``: :func:`db.migrate.upgrade`
   derives its history again from all the observations once the chain has reached head (the history
   rule of the shipped code, on the schema it reads), in its own transaction. A group holding
   two lakes of one AOI (one AOI saw two lakes where another saw one) is ambiguous: it is left as it
   is and counted in the log line, to be resolved by a rerun.
2. **Drops ``lake.aoi_id``** (and its index). The views ``current_lakes``, ``lake_changes``,
   ``growing_lakes`` and the function ``lakes_as_of`` are recreated with ``aoi_names`` in its place:
   the names of the AOIs whose outline intersects the lake's outline, sorted, comma-separated.

An offline (``--sql``) script cannot derive histories: it refuses to run on a database holding
such duplicates. The downgrade restores ``lake.aoi_id`` as the AOI of each lake's earliest observation (ties by
scene key) and the objects of 0001; merged duplicates stay merged. Frozen history: the SQL below is
literal.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from alembic import context, op
from sqlalchemy import Connection, text

from db.schema import OWNER_ROLE, SCHEMA, SRID, WRITER_ROLE

# revision identifiers, used by Alembic.
revision: str = "0006_spatial_lake_identity"
down_revision: str | Sequence[str] | None = "0005_geometry_validity_triggers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

MATCH_OVERLAP = 0.3
"""Intersection / area of the smaller outline at which two AOIs' lakes are one (``MergeConfig.match_overlap``)."""

VIEWS = ("growing_lakes", "lake_changes", "current_lakes")  # drop order
FUNCTION = f"{SCHEMA}.lakes_as_of(timestamptz)"

_DUPLICATE_PAIRS = f"""
SELECT a.lake_id, a.aoi_id, b.lake_id, b.aoi_id
FROM {SCHEMA}.lake AS a
JOIN {SCHEMA}.lake AS b ON a.lake_id < b.lake_id AND a.aoi_id <> b.aoi_id AND a.geom && b.geom
WHERE ST_Intersects(a.geom, b.geom)
  AND ST_Area(geography(ST_Intersection(a.geom, b.geom)))
      >= :f * least(ST_Area(geography(a.geom)), ST_Area(geography(b.geom)))
ORDER BY a.lake_id, b.lake_id
"""

_REFUSE_DUPLICATES = f"""
DO $$
BEGIN
    IF EXISTS ({_DUPLICATE_PAIRS.replace("ORDER BY a.lake_id, b.lake_id", "").replace(":f", str(MATCH_OVERLAP))}) THEN
        RAISE EXCEPTION 'lakes duplicated across AOIs: merge them with an online upgrade (glacial-lakes db upgrade)';
    END IF;
END $$
"""

# Lineage of a duplicate moves to its keeper; a link that would then exist twice, or join the
# keeper to itself, is dropped (the earliest sensing time of a repeated link is kept).
_MOVE = (
    f"UPDATE {SCHEMA}.lake_observation SET lake_id = :k WHERE lake_id = :d",
    f"""DELETE FROM {SCHEMA}.lake_lineage AS x USING {SCHEMA}.lake_lineage AS y
        WHERE x.parent_lake_id = :d AND y.parent_lake_id = :k AND x.child_lake_id = y.child_lake_id
          AND x.kind = y.kind AND x.sensing_time >= y.sensing_time""",
    f"""DELETE FROM {SCHEMA}.lake_lineage AS x USING {SCHEMA}.lake_lineage AS y
        WHERE x.child_lake_id = :d AND y.child_lake_id = :k AND x.parent_lake_id = y.parent_lake_id
          AND x.kind = y.kind AND x.sensing_time >= y.sensing_time""",
    f"UPDATE {SCHEMA}.lake_lineage SET parent_lake_id = :k WHERE parent_lake_id = :d",
    f"UPDATE {SCHEMA}.lake_lineage SET child_lake_id = :k WHERE child_lake_id = :d",
    f"DELETE FROM {SCHEMA}.lake_lineage WHERE parent_lake_id = child_lake_id",
    f"DELETE FROM {SCHEMA}.lake_version WHERE lake_id = :d",
    f"DELETE FROM {SCHEMA}.lake WHERE lake_id = :d",
)

# Schema-qualified: lakes_as_of runs with search_path = pg_catalog (ST_Intersects uses the
# GiST index of aoi.geom by itself).
_AOI_NAMES = (
    f"(SELECT string_agg(n.name, ',' ORDER BY n.name) FROM {SCHEMA}.aoi AS n WHERE public.ST_Intersects(n.geom, {{g}}))"
)


def _names(geom: str) -> str:
    return _AOI_NAMES.format(g=geom)


_CURRENT_LAKES = f"""
CREATE VIEW {SCHEMA}.current_lakes AS
SELECT l.lake_id, {_names("l.geom")} AS aoi_names, l.status, lv.change_kind, lv.valid_from,
       l.area_m2, l.perimeter_m, l.centroid_lon, l.centroid_lat, l.elevation_m, l.mean_probability,
       lv.area_change_m2, lv.growth_rate_m2_per_year,
       l.first_seen, l.last_seen, l.last_observed, l.n_observations, l.geom
FROM {SCHEMA}.lake AS l
LEFT JOIN LATERAL (
    SELECT v.change_kind, lower(v.valid) AS valid_from, v.area_change_m2, v.growth_rate_m2_per_year
    FROM {SCHEMA}.lake_version AS v
    WHERE v.lake_id = l.lake_id
    ORDER BY lower(v.valid) DESC
    LIMIT 1
) AS lv ON true
WHERE l.status = 'active'
"""

_LAKE_CHANGES = f"""
CREATE VIEW {SCHEMA}.lake_changes AS
SELECT v.version_id, v.lake_id, {_names("l.geom")} AS aoi_names, lower(v.valid) AS valid_from,
       upper(v.valid) AS valid_to, v.change_kind, v.status, v.area_m2, v.area_change_m2,
       v.growth_rate_m2_per_year, v.scene_id, v.model_version, v.geom
FROM {SCHEMA}.lake_version AS v
JOIN {SCHEMA}.lake AS l ON l.lake_id = v.lake_id
"""

_GROWING_LAKES = f"""
CREATE VIEW {SCHEMA}.growing_lakes AS
SELECT c.lake_id, c.aoi_names, c.change_kind, c.valid_from,
       f.valid_from AS first_valid_from, f.area_m2 AS first_area_m2, c.area_m2,
       c.area_m2 - f.area_m2 AS growth_m2,
       100.0 * (c.area_m2 - f.area_m2) / NULLIF(f.area_m2, 0) AS growth_pct,
       c.growth_rate_m2_per_year, c.geom
FROM {SCHEMA}.current_lakes AS c
LEFT JOIN LATERAL (
    SELECT lower(v.valid) AS valid_from, v.area_m2
    FROM {SCHEMA}.lake_version AS v
    WHERE v.lake_id = c.lake_id
    ORDER BY lower(v.valid)
    LIMIT 1
) AS f ON true
WHERE c.change_kind = 'grown' OR c.area_m2 > f.area_m2
"""

_LAKES_AS_OF = f"""
CREATE FUNCTION {SCHEMA}.lakes_as_of(ts timestamptz)
RETURNS TABLE (
    lake_id bigint, aoi_names text, status text, change_kind text, valid_from timestamptz,
    area_m2 double precision, perimeter_m double precision,
    centroid_lon double precision, centroid_lat double precision,
    elevation_m double precision, mean_probability double precision,
    geom geometry(MultiPolygon, {SRID})
)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT v.lake_id, {_names("v.geom")}, v.status, v.change_kind, lower(v.valid),
           v.area_m2, v.perimeter_m, v.centroid_lon, v.centroid_lat, v.elevation_m, v.mean_probability,
           v.geom
    FROM {SCHEMA}.lake_version AS v
    WHERE v.valid @> ts AND v.status = 'active'
    ORDER BY v.lake_id
$$
"""

_COMMENTS = {
    "VIEW current_lakes": "Active lakes with their current geometry and the change kind of their latest version; "
    "aoi_names: the AOIs whose outline the lake's outline intersects.",
    "VIEW lake_changes": "One row per lake version: validity [valid_from, valid_to), change kind, area change (m²).",
    "VIEW growing_lakes": "Current lakes whose latest version grew or whose area exceeds their first version's.",
    "FUNCTION lakes_as_of(timestamptz)": "Active lake versions valid at the given instant (sensing time), "
    "with the AOIs whose outline each version's outline intersects.",
}

# --- the objects of 0001, for the downgrade (literal copies) -------------------------------------

_OLD_CURRENT_LAKES = f"""
CREATE VIEW {SCHEMA}.current_lakes AS
SELECT l.lake_id, l.aoi_id, a.name AS aoi_name, l.status, lv.change_kind, lv.valid_from,
       l.area_m2, l.perimeter_m, l.centroid_lon, l.centroid_lat, l.elevation_m, l.mean_probability,
       lv.area_change_m2, lv.growth_rate_m2_per_year,
       l.first_seen, l.last_seen, l.last_observed, l.n_observations, l.geom
FROM {SCHEMA}.lake AS l
JOIN {SCHEMA}.aoi AS a ON a.aoi_id = l.aoi_id
LEFT JOIN LATERAL (
    SELECT v.change_kind, lower(v.valid) AS valid_from, v.area_change_m2, v.growth_rate_m2_per_year
    FROM {SCHEMA}.lake_version AS v
    WHERE v.lake_id = l.lake_id
    ORDER BY lower(v.valid) DESC
    LIMIT 1
) AS lv ON true
WHERE l.status = 'active'
"""

_OLD_LAKE_CHANGES = f"""
CREATE VIEW {SCHEMA}.lake_changes AS
SELECT v.version_id, v.lake_id, l.aoi_id, lower(v.valid) AS valid_from, upper(v.valid) AS valid_to,
       v.change_kind, v.status, v.area_m2, v.area_change_m2, v.growth_rate_m2_per_year,
       v.scene_id, v.model_version, v.geom
FROM {SCHEMA}.lake_version AS v
JOIN {SCHEMA}.lake AS l ON l.lake_id = v.lake_id
"""

_OLD_GROWING_LAKES = _GROWING_LAKES.replace("c.aoi_names,", "c.aoi_id, c.aoi_name,")

_OLD_LAKES_AS_OF = f"""
CREATE FUNCTION {SCHEMA}.lakes_as_of(ts timestamptz)
RETURNS TABLE (
    lake_id bigint, aoi_id integer, status text, change_kind text, valid_from timestamptz,
    area_m2 double precision, perimeter_m double precision,
    centroid_lon double precision, centroid_lat double precision,
    elevation_m double precision, mean_probability double precision,
    geom geometry(MultiPolygon, {SRID})
)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT v.lake_id, l.aoi_id, v.status, v.change_kind, lower(v.valid),
           v.area_m2, v.perimeter_m, v.centroid_lon, v.centroid_lat, v.elevation_m, v.mean_probability,
           v.geom
    FROM {SCHEMA}.lake_version AS v
    JOIN {SCHEMA}.lake AS l ON l.lake_id = v.lake_id
    WHERE v.valid @> ts AND v.status = 'active'
    ORDER BY v.lake_id
$$
"""

_OLD_COMMENTS = {
    "VIEW current_lakes": "Active lakes with their current geometry and the change kind of their latest version.",
    "VIEW lake_changes": "One row per lake version: validity [valid_from, valid_to), change kind, area change (m²).",
    "VIEW growing_lakes": "Current lakes whose latest version grew or whose area exceeds their first version's.",
    "FUNCTION lakes_as_of(timestamptz)": "Active lake versions valid at the given instant (sensing time).",
}

_RESTORE_AOI = f"""
UPDATE {SCHEMA}.lake AS l SET aoi_id = (
    SELECT s.aoi_id FROM {SCHEMA}.lake_observation AS o JOIN {SCHEMA}.scene AS s ON s.scene_id = o.scene_id
    WHERE o.lake_id = l.lake_id ORDER BY o.sensing_time, s.scene_key LIMIT 1
)
"""


def duplicate_groups(pairs: Sequence[tuple[int, int, int, int]]) -> tuple[dict[int, int], int]:
    """Union the (lake, aoi, lake, aoi) pairs into groups; duplicate → keeper (smallest id), ambiguous count.

    A group with two lakes of one AOI is ambiguous and left alone (it is counted, not merged).
    """
    parent: dict[int, int] = {}

    def find(i: int) -> int:
        while parent.setdefault(i, i) != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    aoi_of: dict[int, int] = {}
    for a, aoi_a, b, aoi_b in pairs:
        aoi_of[a], aoi_of[b] = aoi_a, aoi_b
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in sorted(aoi_of):
        groups.setdefault(find(i), []).append(i)
    keeper_of: dict[int, int] = {}
    ambiguous = 0
    for members in groups.values():
        if len({aoi_of[i] for i in members}) < len(members):
            ambiguous += 1
            continue
        keeper = min(members)
        keeper_of.update({i: keeper for i in members if i != keeper})
    return keeper_of, ambiguous


def merge_duplicates(conn: Connection) -> tuple[int, int]:
    """Merge every unambiguous group of one lake kept by several AOIs; (lakes merged away, ambiguous groups)."""
    pairs = [tuple(map(int, r)) for r in conn.execute(text(_DUPLICATE_PAIRS), {"f": MATCH_OVERLAP})]
    keeper_of, ambiguous = duplicate_groups(pairs)  # type: ignore[arg-type]
    if not keeper_of:
        return 0, ambiguous
    for dup, keeper in sorted(keeper_of.items()):
        for sql in _MOVE:
            conn.execute(text(sql), {"d": dup, "k": keeper})
    conn.execute(
        text(f"INSERT INTO {SCHEMA}.lake_rebuild_queue (lake_id) SELECT unnest(CAST(:ids AS bigint[]))"),
        {"ids": sorted(set(keeper_of.values()))},
    )
    return len(keeper_of), ambiguous


def _comment(comments: dict[str, str]) -> None:
    for target, comment in comments.items():
        kind, name = target.split(" ", 1)
        quoted = comment.replace("'", "''")
        op.execute(f"COMMENT ON {kind} {SCHEMA}.{name} IS '{quoted}'")


def _read_only(function_sql: str, views_sql: Sequence[str], comments: dict[str, str]) -> None:
    """Create the views and function, comment them, and keep them read-only (policy of 0001)."""
    for sql in views_sql:
        op.execute(sql)
    op.execute(function_sql)
    _comment(comments)
    op.execute(f"REVOKE INSERT, UPDATE ON {', '.join(f'{SCHEMA}.{v}' for v in VIEWS)} FROM {WRITER_ROLE}")
    op.execute(f"REVOKE EXECUTE ON FUNCTION {FUNCTION} FROM PUBLIC")


_QUEUE = f"""
CREATE TABLE {SCHEMA}.lake_rebuild_queue (
    lake_id bigint PRIMARY KEY REFERENCES {SCHEMA}.lake (lake_id) ON DELETE CASCADE,
    queued_at timestamptz NOT NULL DEFAULT now()
)
"""


def upgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    op.execute(_QUEUE)
    op.execute(
        f"COMMENT ON TABLE {SCHEMA}.lake_rebuild_queue IS 'Lakes whose history a migration changed the facts of: "
        "derived again by the upgrade once it reaches head.'"
    )
    if context.is_offline_mode():
        # A script cannot derive histories: it refuses to run where there is anything to merge.
        op.execute(_REFUSE_DUPLICATES)
    else:
        merged, ambiguous = merge_duplicates(op.get_bind())
        log.info("one lake, one id: %d duplicate lakes merged, %d ambiguous groups left", merged, ambiguous)
    for view in VIEWS:
        op.execute(f"DROP VIEW {SCHEMA}.{view}")
    op.execute(f"DROP FUNCTION {FUNCTION}")
    op.execute(f"DROP INDEX {SCHEMA}.ix_lake_aoi_id")
    op.execute(f"ALTER TABLE {SCHEMA}.lake DROP COLUMN aoi_id")
    _read_only(_LAKES_AS_OF, (_CURRENT_LAKES, _LAKE_CHANGES, _GROWING_LAKES), _COMMENTS)
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    for view in VIEWS:
        op.execute(f"DROP VIEW {SCHEMA}.{view}")
    op.execute(f"DROP FUNCTION {FUNCTION}")
    op.execute(f"ALTER TABLE {SCHEMA}.lake ADD COLUMN aoi_id integer REFERENCES {SCHEMA}.aoi (aoi_id)")
    op.execute(_RESTORE_AOI)
    op.execute(f"ALTER TABLE {SCHEMA}.lake ALTER COLUMN aoi_id SET NOT NULL")
    op.execute(f"CREATE INDEX ix_lake_aoi_id ON {SCHEMA}.lake (aoi_id)")
    _read_only(_OLD_LAKES_AS_OF, (_OLD_CURRENT_LAKES, _OLD_LAKE_CHANGES, _OLD_GROWING_LAKES), _OLD_COMMENTS)
    op.execute(f"DROP TABLE {SCHEMA}.lake_rebuild_queue")
    op.execute("RESET ROLE")
