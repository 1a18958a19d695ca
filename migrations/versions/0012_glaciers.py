"""Glacier outlines per AOI and the glacier context of every lake (distance, contact, lake type).

Revision ID: 0012_glaciers
Revises: 0011_lake_attributes
Create Date: 2026-12-02

* ``glacier_source``: one imported outline file per AOI and source (``RGI60:<file name>`` …), its
  sha256, CRS, glacier count and **coverage**: the AOI outline within the file's extent, where the
  outlines are taken as complete. A lake outside every coverage has lake type ``unknown``.
* ``glacier``: the outlines (MultiPolygon, EPSG:4326, valid: CHECK), GiST-indexed; deleted with
  their source (a re-import replaces them).
* ``glacier_context_settings``: the thresholds of the rule, one row (contact 10 m, unconnected
  2 km, supraglacial from half the lake's area).
* ``glacier_context(geometry)``: the rule, in SQL, so it is current whenever glaciers change.
  Distances are geodesic (``geography``, WGS 84 spheroid, metres) to the nearest outline, exact:
  the GiST KNN in degrees gives a first glacier, its distance bounds the candidates (GiST again),
  and each candidate's centre and reach (``glacier.centre``, ``glacier.reach_m``: the farthest
  vertex from the centre) give a lower bound, so only the few that could be nearer are measured.
* The view ``lake_glacier_context`` (current lakes), the same five columns appended to
  ``current_lakes`` (after ``geom``) and to ``lakes_as_of`` (a past outline against today's glaciers),
  both as revision 0011 defines them.

Objects are created as ``lake_owner``; default privileges grant reading and INSERT/UPDATE to the
writer, which also may DELETE glaciers and sources (a re-import). The downgrade restores the
views and function of 0011 and drops the rest. Frozen history: the SQL below is literal.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry

from db.schema import OWNER_ROLE, SCHEMA, SRID, WRITER_ROLE

# revision identifiers, used by Alembic.
revision: str = "0012_glaciers"
down_revision: str | Sequence[str] | None = "0011_lake_attributes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = f"{SCHEMA}.glacier_context(geometry)"
AS_OF = f"{SCHEMA}.lakes_as_of(timestamptz)"
VIEW = f"{SCHEMA}.lake_glacier_context"

_CONTEXT = f"""
CREATE FUNCTION {FUNCTION.replace("(geometry)", "(lake geometry)")}
RETURNS TABLE (glacier_id bigint, rgi_id text, glacier_distance_m double precision,
               glacier_contact boolean, lake_type text)
LANGUAGE plpgsql STABLE PARALLEL SAFE ROWS 1  -- exactly one row: the planner must not expect 1000 per lake
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg {SCHEMA}.glacier_context_settings;
    lg public.geography;
    best double precision;
    best_id bigint;
    best_rgi text;
    d double precision;
    lat double precision;
    radius double precision;
    inside double precision;
    rec record;
BEGIN
    IF lake IS NULL OR NOT EXISTS (
        SELECT 1 FROM {SCHEMA}.glacier_source AS s
        WHERE s.coverage OPERATOR(public.&&) lake AND public.ST_Intersects(s.coverage, lake)
    ) THEN
        RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::double precision, NULL::boolean, 'unknown'::text;
        RETURN;
    END IF;
    SELECT * INTO cfg FROM {SCHEMA}.glacier_context_settings LIMIT 1;
    lg := public.geography(lake);
    -- 1. The nearest glacier in degrees (GiST KNN) and its geodesic distance: an upper bound.
    SELECT g.glacier_id, g.rgi_id, public.ST_Distance(public.geography(g.geom), lg) INTO best_id, best_rgi, best
    FROM {SCHEMA}.glacier AS g ORDER BY g.geom OPERATOR(public.<->) lake LIMIT 1;
    IF best_id IS NULL THEN  -- a coverage without glaciers: none near
        RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::double precision, false, 'non_glacial'::text;
        RETURN;
    END IF;
    -- 2. Every glacier nearer than that lies within best / 110 km degrees of latitude, where a degree
    -- spans at least 110 km * cos(lat) in any direction: those are the candidates (GiST again).
    -- Each has a lower bound, the distance to its centre less its reach (triangle inequality);
    -- in order of that bound, the exact distance is needed only while the bound is below the best.
    lat := greatest(abs(public.ST_YMin(lake)), abs(public.ST_YMax(lake))) + best / 110000.0;
    radius := CASE WHEN lat >= 89.0 THEN 360.0 ELSE best / (110000.0 * cos(radians(lat))) + 1e-9 END;
    FOR rec IN
        SELECT g.glacier_id, g.rgi_id, g.geom,
               public.ST_Distance(public.geography(g.centre), lg) - g.reach_m AS bound
        FROM {SCHEMA}.glacier AS g
        WHERE public.ST_DWithin(g.geom, lake, radius) AND g.glacier_id <> best_id
        ORDER BY 4, 1
    LOOP
        EXIT WHEN rec.bound > best;
        d := public.ST_Distance(public.geography(rec.geom), lg);
        IF d < best OR (d = best AND rec.glacier_id < best_id) THEN
            best := d;
            best_id := rec.glacier_id;
            best_rgi := rec.rgi_id;
        END IF;
    END LOOP;
    inside := 0;
    IF best = 0 THEN
        -- The union: overlapping sources (RGI 6 and RGI 7 of one AOI) must not count an overlap twice.
        SELECT coalesce(public.ST_Area(public.geography(public.ST_Union(public.ST_Intersection(g.geom, lake)))), 0)
        INTO inside
        FROM {SCHEMA}.glacier AS g
        WHERE g.geom OPERATOR(public.&&) lake AND public.ST_Intersects(g.geom, lake);
    END IF;
    RETURN QUERY
    SELECT best_id, best_rgi, best, best <= cfg.contact_tolerance_m,
           CASE WHEN inside > 0 AND inside >= cfg.supraglacial_min_fraction * public.ST_Area(lg) THEN 'supraglacial'
                WHEN best <= cfg.contact_tolerance_m THEN 'proglacial_contact'
                WHEN best <= cfg.unconnected_max_distance_m THEN 'unconnected_glacial'
                ELSE 'non_glacial' END;
END
$$
"""

_CONTEXT_COLUMNS = "gc.glacier_id, gc.rgi_id, gc.glacier_distance_m, gc.glacier_contact, gc.lake_type"

_LAKE_GLACIER_CONTEXT = f"""
CREATE VIEW {VIEW} AS
SELECT l.lake_id, {_CONTEXT_COLUMNS}, l.geom
FROM {SCHEMA}.lake AS l
LEFT JOIN LATERAL {SCHEMA}.glacier_context(l.geom) AS gc ON true
WHERE l.status = 'active'
"""

# As in 0011, with the glacier context appended (CREATE OR REPLACE may only add columns at the end,
# so growing_lakes, which reads current_lakes, stays as it is).
_AOI_NAMES = (
    f"(SELECT string_agg(n.name, ',' ORDER BY n.name) FROM {SCHEMA}.aoi AS n WHERE public.ST_Intersects(n.geom, {{g}}))"
)
_ATTRIBUTES = (
    "area_m2",
    "perimeter_m",
    "centroid_lon",
    "centroid_lat",
    "elevation_m",
    "mean_probability",
    "perimeter_smoothed_m",
    "area_uncertainty_m2",
    "surrounding_slope_deg",
    "probability_entropy",
    "volume_m3",
    "volume_uncertainty_m3",
)
_PCT = (
    "100.0 * {v}.area_change_m2 / NULLIF(CASE WHEN {v}.status = 'disappeared' THEN 0 ELSE {v}.area_m2 END "
    "- {v}.area_change_m2, 0)"
)


def _cols(alias: str) -> str:
    return ", ".join(f"{alias}.{k}" for k in _ATTRIBUTES)


_CURRENT_SELECT = f"""
SELECT l.lake_id, {_AOI_NAMES.format(g="l.geom")} AS aoi_names, l.status, lv.change_kind, lv.valid_from,
       {_cols("l")},
       lv.area_change_m2, lv.area_change_pct, lv.growth_rate_m2_per_year,
       l.first_seen, l.last_seen, l.last_observed, l.n_observations, lv.model_version, l.geom{{extra}}
FROM {SCHEMA}.lake AS l
LEFT JOIN LATERAL (
    SELECT v.change_kind, lower(v.valid) AS valid_from, v.area_change_m2, {_PCT.format(v="v")} AS area_change_pct,
           v.growth_rate_m2_per_year, v.model_version
    FROM {SCHEMA}.lake_version AS v
    WHERE v.lake_id = l.lake_id
    ORDER BY lower(v.valid) DESC
    LIMIT 1
) AS lv ON true{{join}}
WHERE l.status = 'active'
"""

_CURRENT_LAKES = f"CREATE OR REPLACE VIEW {SCHEMA}.current_lakes AS" + _CURRENT_SELECT.format(
    extra=f",\n       {_CONTEXT_COLUMNS}",
    join=f"\nLEFT JOIN LATERAL {SCHEMA}.glacier_context(l.geom) AS gc ON true",
)
_OLD_CURRENT_LAKES = f"CREATE VIEW {SCHEMA}.current_lakes AS" + _CURRENT_SELECT.format(extra="", join="")

_OLD_GROWING_LAKES = f"""
CREATE VIEW {SCHEMA}.growing_lakes AS
SELECT c.lake_id, c.aoi_names, c.change_kind, c.valid_from,
       f.valid_from AS first_valid_from, f.area_m2 AS first_area_m2, c.area_m2,
       c.area_m2 - f.area_m2 AS growth_m2,
       100.0 * (c.area_m2 - f.area_m2) / NULLIF(f.area_m2, 0) AS growth_pct,
       c.growth_rate_m2_per_year, c.geom,
       g.growth_rate_m2_per_year AS trend_m2_per_year, g.growth_rate_ci_low AS trend_ci_low,
       g.growth_rate_ci_high AS trend_ci_high
FROM {SCHEMA}.current_lakes AS c
LEFT JOIN LATERAL (
    SELECT lower(v.valid) AS valid_from, v.area_m2
    FROM {SCHEMA}.lake_version AS v
    WHERE v.lake_id = c.lake_id
    ORDER BY lower(v.valid)
    LIMIT 1
) AS f ON true
LEFT JOIN {SCHEMA}.lake_growth AS g ON g.lake_id = c.lake_id
WHERE c.change_kind = 'grown' OR c.area_m2 > f.area_m2
"""

_ATTRIBUTE_TYPES = ",\n    ".join(f"{k} double precision" for k in _ATTRIBUTES)

_AS_OF_TEMPLATE = f"""
CREATE FUNCTION {SCHEMA}.lakes_as_of(ts timestamptz)
RETURNS TABLE (
    lake_id bigint, aoi_names text, status text, change_kind text, valid_from timestamptz,
    {_ATTRIBUTE_TYPES},
    model_version text, first_seen timestamptz, last_seen timestamptz, n_observations integer,
    geom geometry(MultiPolygon, {SRID}){{columns}}
)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT v.lake_id, {_AOI_NAMES.format(g="v.geom")}, v.status, v.change_kind, lower(v.valid),
           {_cols("v")},
           v.model_version, seen.first_seen, seen.last_seen, CAST(seen.n AS integer),
           v.geom{{extra}}
    FROM {SCHEMA}.lake_version AS v
    LEFT JOIN LATERAL (
        SELECT min(o.sensing_time) FILTER (WHERE o.present) AS first_seen,
               max(o.sensing_time) FILTER (WHERE o.present) AS last_seen, count(*) AS n
        FROM {SCHEMA}.lake_observation AS o
        JOIN {SCHEMA}.scene AS s ON s.scene_id = o.scene_id
        WHERE o.lake_id = v.lake_id AND o.sensing_time <= ts AND s.superseded_by IS NULL
    ) AS seen ON true{{join}}
    WHERE v.valid @> ts AND v.status = 'active'
    ORDER BY v.lake_id
$$
"""

_LAKES_AS_OF = _AS_OF_TEMPLATE.format(
    columns=",\n    glacier_id bigint, rgi_id text, glacier_distance_m double precision, "
    "glacier_contact boolean, lake_type text",
    extra=f", {_CONTEXT_COLUMNS}",
    join=f"\n    LEFT JOIN LATERAL {SCHEMA}.glacier_context(v.geom) AS gc ON true",
)
_OLD_LAKES_AS_OF = _AS_OF_TEMPLATE.format(columns="", extra="", join="")

_CONTEXT_NOTE = (
    "glacier_distance_m: geodesic (WGS 84) distance to the nearest glacier outline, m; glacier_contact: "
    "within glacier_context_settings.contact_tolerance_m; lake_type: supraglacial | proglacial_contact | "
    "unconnected_glacial | non_glacial | unknown (no glacier outlines cover the lake)."
)
_OLD_CURRENT_NOTE = (
    "Active lakes with their current geometry and attributes, the change kind, area change "
    "(m², %) and model version of their latest version; aoi_names: the AOIs whose outline the lake's outline "
    "intersects."
)
_OLD_AS_OF_NOTE = (
    "Active lake versions valid at the given instant (sensing time), with "
    "their attributes, model version, first / last seen and observation count up to that instant, and the AOIs "
    "whose outline each version's outline intersects."
)
_COMMENTS = {
    f"VIEW {VIEW}": f"Glacier context of the current lakes. {_CONTEXT_NOTE}",
    f"FUNCTION {FUNCTION}": "Glacier context of one outline (EPSG:4326) against the imported glaciers. "
    + _CONTEXT_NOTE,
    f"VIEW {SCHEMA}.current_lakes": _OLD_CURRENT_NOTE + " The glacier context columns as in lake_glacier_context.",
    f"FUNCTION {AS_OF}": _OLD_AS_OF_NOTE + " The glacier context of each version's outline against the glaciers "
    "imported now.",
}
_OLD_COMMENTS = {
    f"VIEW {SCHEMA}.current_lakes": _OLD_CURRENT_NOTE,
    f"VIEW {SCHEMA}.growing_lakes": "Current lakes whose latest version grew or whose area exceeds their first "
    "version's; trend_*: the Theil-Sen rate of lake_growth (m²/year, 95 % interval).",
    f"FUNCTION {AS_OF}": _OLD_AS_OF_NOTE,
}


def _multipolygon() -> Geometry:
    return Geometry(geometry_type="MULTIPOLYGON", srid=SRID, dimension=2, spatial_index=False)


def _comment(comments: dict[str, str]) -> None:
    for target, comment in comments.items():
        kind, name = target.split(" ", 1)
        quoted = comment.replace("'", "''")
        op.execute(f"COMMENT ON {kind} {name} IS '{quoted}'")


def _tables() -> None:
    op.create_table(
        "glacier_source",
        sa.Column("source_id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("aoi_id", sa.Integer(), nullable=False),
        sa.Column(
            "source", sa.Text(), nullable=False, comment="outline scheme and file name, e.g. RGI60:15_rgi60.gpkg"
        ),
        sa.Column("scheme", sa.Text(), nullable=False, comment="RGI50 | RGI60 | RGI70 | other (from the id field)"),
        sa.Column("sha256", sa.Text(), nullable=False, comment="sha256 of the file (all parts of a shapefile)"),
        sa.Column("source_crs", sa.Text(), nullable=False),
        sa.Column("n_glaciers", sa.Integer(), nullable=False),
        sa.Column(
            "coverage",
            _multipolygon(),
            nullable=False,
            comment="where the outlines are taken as complete: the AOI outline within the file's extent",
        ),
        sa.Column("imported_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["aoi_id"], [f"{SCHEMA}.aoi.aoi_id"]),
        sa.PrimaryKeyConstraint("source_id"),
        sa.UniqueConstraint("aoi_id", "source", name="glacier_source_aoi_id_source_key"),
        sa.CheckConstraint("n_glaciers > 0", name="ck_glacier_source_n_glaciers"),
        sa.CheckConstraint("public.ST_IsValid(coverage)", name="ck_glacier_source_coverage_valid"),
        schema=SCHEMA,
        comment="One imported glacier outline file per AOI and source; re-importing a source replaces it.",
    )
    op.create_table(
        "glacier",
        sa.Column("glacier_id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("aoi_id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False, comment="glacier_source.source of the file it came from"),
        sa.Column("rgi_id", sa.Text(), nullable=False, comment="RGIId (RGI 6), rgi_id (RGI 7) or glac_id"),
        sa.Column("name", sa.Text(), nullable=True, comment="glacier name where the file gives one"),
        sa.Column("geom", _multipolygon(), nullable=False),
        sa.Column(
            "centre",
            Geometry(geometry_type="POINT", srid=SRID, dimension=2, spatial_index=False),
            nullable=False,
            comment="a point of reference for the distance bound (the outline's centroid in degrees)",
        ),
        sa.Column(
            "reach_m",
            sa.Float(),
            nullable=False,
            comment="geodesic distance from centre to the farthest vertex of the outline, m (plus 1 m)",
        ),
        sa.ForeignKeyConstraint(["aoi_id"], [f"{SCHEMA}.aoi.aoi_id"]),
        sa.ForeignKeyConstraint(["source_id"], [f"{SCHEMA}.glacier_source.source_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("glacier_id"),
        sa.CheckConstraint("public.ST_IsValid(geom)", name="ck_glacier_geom_valid"),
        schema=SCHEMA,
        comment="Glacier outlines (EPSG:4326, valid) of the AOIs they were imported for.",
    )
    op.create_table(
        "glacier_context_settings",
        sa.Column("singleton", sa.Boolean(), server_default="true", nullable=False),
        sa.Column(
            "contact_tolerance_m",
            sa.Float(),
            server_default="10",
            nullable=False,
            comment="a lake within this geodesic distance of a glacier is in contact, m",
        ),
        sa.Column(
            "unconnected_max_distance_m",
            sa.Float(),
            server_default="2000",
            nullable=False,
            comment="a lake not in contact but within this distance is unconnected glacial, m",
        ),
        sa.Column(
            "supraglacial_min_fraction",
            sa.Float(),
            server_default="0.5",
            nullable=False,
            comment="share of the lake area inside glacier outlines from which it is supraglacial, 0–1",
        ),
        sa.PrimaryKeyConstraint("singleton"),
        sa.CheckConstraint("singleton", name="ck_glacier_context_settings_one_row"),
        sa.CheckConstraint(
            "contact_tolerance_m >= 0 AND unconnected_max_distance_m >= contact_tolerance_m "
            "AND supraglacial_min_fraction > 0 AND supraglacial_min_fraction <= 1",
            name="ck_glacier_context_settings_ranges",
        ),
        schema=SCHEMA,
        comment="The thresholds of the lake_type rule (one row).",
    )


def upgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    _tables()
    op.execute(f"INSERT INTO {SCHEMA}.glacier_context_settings DEFAULT VALUES")
    op.execute(f"CREATE INDEX idx_glacier_geom ON {SCHEMA}.glacier USING gist (geom)")
    op.execute(f"CREATE INDEX idx_glacier_source_coverage ON {SCHEMA}.glacier_source USING gist (coverage)")
    op.execute(f"CREATE INDEX ix_glacier_source_id ON {SCHEMA}.glacier (source_id)")
    op.execute(f"CREATE INDEX ix_glacier_aoi_id ON {SCHEMA}.glacier (aoi_id)")
    op.execute(f"GRANT DELETE ON {SCHEMA}.glacier, {SCHEMA}.glacier_source TO {WRITER_ROLE}")
    op.execute(_CONTEXT)
    op.execute(f"REVOKE EXECUTE ON FUNCTION {FUNCTION} FROM PUBLIC")
    op.execute(_LAKE_GLACIER_CONTEXT)
    op.execute(_CURRENT_LAKES)
    op.execute(f"DROP FUNCTION {AS_OF}")
    op.execute(_LAKES_AS_OF)
    op.execute(f"REVOKE EXECUTE ON FUNCTION {AS_OF} FROM PUBLIC")
    _comment(_COMMENTS)
    op.execute(f"REVOKE INSERT, UPDATE ON {VIEW}, {SCHEMA}.current_lakes FROM {WRITER_ROLE}")
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    op.execute(f"DROP FUNCTION {AS_OF}")
    op.execute(_OLD_LAKES_AS_OF)
    op.execute(f"REVOKE EXECUTE ON FUNCTION {AS_OF} FROM PUBLIC")
    # CREATE OR REPLACE cannot drop columns: the dependent view goes and comes back too.
    op.execute(f"DROP VIEW {SCHEMA}.growing_lakes")
    op.execute(f"DROP VIEW {SCHEMA}.current_lakes")
    op.execute(_OLD_CURRENT_LAKES)
    op.execute(_OLD_GROWING_LAKES)
    _comment(_OLD_COMMENTS)
    op.execute(f"REVOKE INSERT, UPDATE ON {SCHEMA}.current_lakes, {SCHEMA}.growing_lakes FROM {WRITER_ROLE}")
    op.execute(f"DROP VIEW {VIEW}")
    op.execute(f"DROP FUNCTION {FUNCTION}")
    op.execute(f"DROP TABLE {SCHEMA}.glacier")
    op.execute(f"DROP TABLE {SCHEMA}.glacier_source")
    op.execute(f"DROP TABLE {SCHEMA}.glacier_context_settings")
    op.execute("RESET ROLE")
