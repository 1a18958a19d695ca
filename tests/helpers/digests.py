"""Content digests of an inventory: what "two databases hold the same inventory" means in tests.

Ids and creation stamps legitimately differ between databases; rows are keyed by content.
"""

from __future__ import annotations

import sqlalchemy as sa

from db.attributes import ATTRIBUTES
from db.queries import in_aoi


def _row(*exprs: str) -> str:
    # NULL spelled out so that (a, NULL, b) and (a, b, NULL) differ; float8::text is exact.
    return "concat_ws('|', " + ", ".join(f"coalesce(CAST({e} AS text), '~')" for e in exprs) + ")"


def _epoch(column: str) -> str:
    return f"extract(epoch FROM {column})"


_ATTRS = ATTRIBUTES  # every declared lake attribute (db.attributes), in column order
_AOI_FILTER = "(CAST(:aoi AS text) IS NULL OR a.name = :aoi)"
# Ids and creation stamps legitimately differ between databases (identity values consumed by a
# rolled-back transaction, arrival order); every row is keyed by content instead: a lake by its
# state, a scene by its inputs, versions / observations / lineage by those keys.
_DIGEST = f"""
WITH lk AS (
    SELECT l.lake_id, md5({
    _row(
        "l.status",
        "encode(ST_AsBinary(l.geom), 'hex')",
        *[f"l.{c}" for c in _ATTRS],
        *[_epoch(f"l.{c}") for c in ("first_seen", "last_seen", "last_observed")],
        "l.n_observations",
    )
}) AS k
    FROM inventory.lake AS l WHERE {in_aoi("l.geom")}
), sc AS (
    SELECT s.scene_id, md5({
    _row(
        _epoch("s.sensing_time"),
        "s.s2_product_id",
        "s.s1_product_id",
        "s.dem_id",
        "s.model_version",
        "s.params_hash",
        "s.inputs",
        "encode(ST_AsBinary(s.valid_footprint), 'hex')",
        "s.cloud_fraction",
        "s.valid_fraction",
    )
}) AS k
    FROM inventory.scene AS s JOIN inventory.aoi AS a ON a.aoi_id = s.aoi_id WHERE {_AOI_FILTER}
), rows AS (
    SELECT 'lake' AS t, k AS r FROM lk
    UNION ALL SELECT 'scene', k FROM sc
    UNION ALL
    SELECT 'lake_version', {
    _row(
        "lk.k",
        _epoch("lower(v.valid)"),
        _epoch("upper(v.valid)"),
        "v.change_kind",
        "v.status",
        "md5(ST_AsBinary(v.geom))",
        *[f"v.{c}" for c in _ATTRS],
        "v.area_change_m2",
        "v.growth_rate_m2_per_year",
        "sc.k",
        "v.model_version",
    )
}
    FROM inventory.lake_version AS v JOIN lk ON lk.lake_id = v.lake_id LEFT JOIN sc ON sc.scene_id = v.scene_id
    UNION ALL
    SELECT 'lake_observation', {
    _row(
        "lk.k",
        "sc.k",
        _epoch("o.sensing_time"),
        "o.present",
        "md5(ST_AsBinary(o.geom))",
        *[f"o.{c}" for c in _ATTRS],
        "o.attributes",
    )
}
    FROM inventory.lake_observation AS o JOIN lk ON lk.lake_id = o.lake_id JOIN sc ON sc.scene_id = o.scene_id
    UNION ALL
    SELECT 'lake_lineage', {_row("p.k", "c.k", "g.kind", "sc.k", _epoch("g.sensing_time"))}
    FROM inventory.lake_lineage AS g JOIN lk AS p ON p.lake_id = g.parent_lake_id
    JOIN lk AS c ON c.lake_id = g.child_lake_id LEFT JOIN sc ON sc.scene_id = g.scene_id
)
SELECT t, count(*), md5(string_agg(r, E'\\n' ORDER BY r)) FROM rows GROUP BY t
"""
TABLES = ("lake", "scene", "lake_version", "lake_observation", "lake_lineage")


def content(engine: sa.Engine, aoi: str | None = None) -> dict[str, tuple[int, str]]:
    """Per table: (row count, md5 over the ordered content rows), optionally of one AOI only."""
    with engine.connect() as conn:
        found = {t: (int(n), digest) for t, n, digest in conn.execute(sa.text(_DIGEST), {"aoi": aoi})}
    return {t: found.get(t, (0, "")) for t in TABLES}


def row_counts(engine: sa.Engine) -> dict[str, int]:
    """Row counts of the inventory tables (all AOIs), read in one snapshot."""
    sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM inventory.{t}" for t in (*TABLES, "aoi", "ingest_run"))
    with engine.connect() as conn:
        return {t: int(n) for t, n in conn.execute(sa.text(sql))}
