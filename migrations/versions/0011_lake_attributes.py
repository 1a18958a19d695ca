"""Lake attributes of issue 13 and the lake growth view.

Revision ID: 0011_lake_attributes
Revises: 0009_run_ledger
Create Date: 2026-12-02

1. **Six measured attributes** on ``lake``, ``lake_observation`` and ``lake_version`` (nullable
   double precision, commented with their units; NULL where not measured: every row written
   before this revision, and what imported inventories cannot know): ``perimeter_smoothed_m``
   (corner-cut outline; ``perimeter_m`` stays the pixel staircase), ``area_uncertainty_m2``,
   ``surrounding_slope_deg`` (0–200 m ring), ``probability_entropy``, ``volume_m3`` (Cook &
   Quincey 2015) and ``volume_uncertainty_m3``. PostgreSQL appends added columns at the end of a
   table: the attribute columns keep their declared order but are no longer one block.
2. **Rehash**: a lake row's content hash covers every attribute (``lake_row_hash`` takes them
   as one array, in column order), so the rows are rehashed with the six NULLs; the downgrade
   rehashes them without.
3. **Views and the as-of function** recreated with every attribute: ``current_lakes`` and
   ``lakes_as_of`` also list the current version's ``model_version`` and first / last seen and
   the observation count (as of the instant, for ``lakes_as_of``); ``current_lakes`` and
   ``lake_changes`` the area change in % of the previous version's water area.
4. **``lake_growth``**: one row per lake (not superseded): the present observations (current
   scenes, one per sensing time: the greatest scene key) counted, first and last seen, the area
   change of the current version (m², %), and the Theil–Sen growth rate of area over time
   (m²/year; the median of the pairwise slopes, so that a minority of outliers — partial ice
   cover, a cloud edge — cannot dominate) with its 95 % confidence interval after Sen (1968)
   (eq. 2.6, ties in area corrected), the same figures as ``scipy.stats.theilslopes``; the source
   scenes, Sentinel-2 products and model versions. The figures of one lake come from the function
   ``lake_growth_rate(lake_id)``, which the view calls per lake. ``growing_lakes`` keeps its columns and rows
   and gains the trend columns of ``lake_growth``.

Objects are created as ``lake_owner`` (default privileges grant reading), views read-only for
the writer, the function not executable by PUBLIC. No COMMIT inside. Frozen history: the SQL
below is literal.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from db.schema import OWNER_ROLE, SCHEMA, SRID, WRITER_ROLE

# revision identifiers, used by Alembic.
revision: str = "0011_lake_attributes"
down_revision: str | Sequence[str] | None = "0009_run_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("lake", "lake_observation", "lake_version")
NEW_ATTRIBUTES = {
    "perimeter_smoothed_m": "perimeter in m of the outline smoothed by corner cutting (edge midpoints, at most 1 "
    "pixel from a corner), local UTM; perimeter_m is the pixel staircase",
    "area_uncertainty_m2": "area uncertainty ± m²: 0.5 pixel × pixel size × perimeter_m (half the boundary pixels)",
    "surrounding_slope_deg": "mean DEM slope in degrees in the ring 0–200 m outside the outline",
    "probability_entropy": "mean binary entropy of the water probability inside the lake, bits 0–1 (model uncertainty)",
    "volume_m3": "volume in m³, V = 0.1697 · A^1.3778 (A = area_m2 in m², Cook & Quincey 2015)",
    "volume_uncertainty_m3": "volume uncertainty ± m³: area uncertainty through the power law and, in quadrature, "
    "the difference to Huggel et al. 2002 (V = 0.104 · A^1.42)",
}
OLD_ATTRIBUTES = ("area_m2", "perimeter_m", "centroid_lon", "centroid_lat", "elevation_m", "mean_probability")
ATTRIBUTES = (*OLD_ATTRIBUTES, *NEW_ATTRIBUTES)

VIEWS = ("growing_lakes", "lake_changes", "current_lakes")  # drop order
GROWTH = f"{SCHEMA}.lake_growth"
GROWTH_RATE = f"{SCHEMA}.lake_growth_rate"
FUNCTION = f"{SCHEMA}.lakes_as_of(timestamptz)"


def _rehash(attributes: Sequence[str]) -> str:
    values = ", ".join(attributes)
    return (
        f"UPDATE {SCHEMA}.lake SET row_hash = {SCHEMA}.lake_row_hash(status, ST_AsBinary(geom), "
        f"CAST(ARRAY[{values}] AS double precision[]), first_seen, last_seen, last_observed, n_observations)"
    )


# Schema-qualified: lakes_as_of runs with search_path = pg_catalog.
_AOI_NAMES = (
    f"(SELECT string_agg(n.name, ',' ORDER BY n.name) FROM {SCHEMA}.aoi AS n WHERE public.ST_Intersects(n.geom, {{g}}))"
)


def _names(geom: str) -> str:
    return _AOI_NAMES.format(g=geom)


def _cols(alias: str, names: Sequence[str] = ATTRIBUTES) -> str:
    return ", ".join(f"{alias}.{k}" for k in names)


# Water area before a version: a disappeared version holds none (its outline is the last known one).
_PCT = (
    "100.0 * {v}.area_change_m2 / NULLIF(CASE WHEN {v}.status = 'disappeared' THEN 0 ELSE {v}.area_m2 END "
    "- {v}.area_change_m2, 0)"
)

_CURRENT_LAKES = f"""
CREATE VIEW {SCHEMA}.current_lakes AS
SELECT l.lake_id, {_names("l.geom")} AS aoi_names, l.status, lv.change_kind, lv.valid_from,
       {_cols("l")},
       lv.area_change_m2, lv.area_change_pct, lv.growth_rate_m2_per_year,
       l.first_seen, l.last_seen, l.last_observed, l.n_observations, lv.model_version, l.geom
FROM {SCHEMA}.lake AS l
LEFT JOIN LATERAL (
    SELECT v.change_kind, lower(v.valid) AS valid_from, v.area_change_m2, {_PCT.format(v="v")} AS area_change_pct,
           v.growth_rate_m2_per_year, v.model_version
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
       upper(v.valid) AS valid_to, v.change_kind, v.status, {_cols("v")},
       v.area_change_m2, {_PCT.format(v="v")} AS area_change_pct,
       v.growth_rate_m2_per_year, v.scene_id, v.model_version, v.geom
FROM {SCHEMA}.lake_version AS v
JOIN {SCHEMA}.lake AS l ON l.lake_id = v.lake_id
"""

# One lake's series: present observations of current scenes, one per sensing time (the greatest
# scene key, as the history's tie rule), time in years of 365.25 days. Per lake (a function called
# by the view, not one CTE over every lake) so that a filter on the view (one lake, a map extent)
# computes only the lakes it keeps. 1.959963984540054 = -Φ⁻¹(0.025): the two-sided 95 % interval,
# indices as scipy.stats.theilslopes (Sen 1968, eq. 2.6; ties in area corrected).
_GROWTH_RATE = f"""
CREATE FUNCTION {GROWTH_RATE}(lake_id bigint)
RETURNS TABLE (
    n_obs bigint, first_seen timestamptz, last_seen timestamptz, growth_rate_m2_per_year double precision,
    growth_rate_ci_low double precision, growth_rate_ci_high double precision
)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH obs AS (
        SELECT DISTINCT ON (o.sensing_time) o.sensing_time, o.area_m2,
               CAST(EXTRACT(epoch FROM o.sensing_time) AS double precision) / 31557600.0 AS t
        FROM {SCHEMA}.lake_observation AS o
        JOIN {SCHEMA}.scene AS s ON s.scene_id = o.scene_id
        WHERE o.lake_id = lake_growth_rate.lake_id AND o.present AND o.area_m2 IS NOT NULL
          AND s.superseded_by IS NULL
        ORDER BY o.sensing_time, s.scene_key DESC
    ),
    slopes AS (
        SELECT (b.area_m2 - a.area_m2) / (b.t - a.t) AS slope FROM obs AS a JOIN obs AS b ON b.t > a.t
    ),
    ranked AS (
        SELECT slope, row_number() OVER (ORDER BY slope) - 1 AS k FROM slopes
    ),
    bounds AS (
        SELECT st.n, st.first_seen, st.last_seen, (SELECT count(*) FROM slopes) AS nt,
               sqrt(greatest((CAST(st.n * (st.n - 1) * (2 * st.n + 5) AS double precision) - ti.tie_term) / 18.0, 0))
                   AS sigma
        FROM (SELECT count(*) AS n, min(sensing_time) AS first_seen, max(sensing_time) AS last_seen FROM obs) AS st,
             (SELECT coalesce(sum(g.k * (g.k - 1) * (2 * g.k + 5)), 0) AS tie_term
              FROM (SELECT count(*) AS k FROM obs GROUP BY area_m2) AS g) AS ti
    )
    SELECT b.n, b.first_seen, b.last_seen,
           (SELECT avg(r.slope) FROM ranked AS r WHERE r.k IN ((b.nt - 1) / 2, b.nt / 2)),  -- the median
           (SELECT r.slope FROM ranked AS r WHERE r.k = greatest(
               CAST(round(CAST((b.nt - 1.959963984540054 * b.sigma) / 2.0 AS double precision)) AS bigint) - 1, 0)),
           (SELECT r.slope FROM ranked AS r WHERE r.k = least(
               CAST(round(CAST((b.nt + 1.959963984540054 * b.sigma) / 2.0 AS double precision)) AS bigint), b.nt - 1))
    FROM bounds AS b
$$
"""

_LAKE_GROWTH = f"""
CREATE VIEW {GROWTH} AS
SELECT l.lake_id, {_names("l.geom")} AS aoi_names, l.status,
       g.n_obs, g.first_seen, g.last_seen, l.area_m2,
       lv.area_change_m2, lv.area_change_pct,
       g.growth_rate_m2_per_year, g.growth_rate_ci_low, g.growth_rate_ci_high,
       p.scene_ids, p.s2_product_ids, p.model_versions, lv.model_version, l.geom
FROM {SCHEMA}.lake AS l
CROSS JOIN LATERAL {GROWTH_RATE}(l.lake_id) AS g
LEFT JOIN LATERAL (
    SELECT v.area_change_m2, {_PCT.format(v="v")} AS area_change_pct, v.model_version
    FROM {SCHEMA}.lake_version AS v
    WHERE v.lake_id = l.lake_id
    ORDER BY lower(v.valid) DESC
    LIMIT 1
) AS lv ON true
LEFT JOIN LATERAL (
    SELECT array_agg(s.scene_id ORDER BY o.sensing_time, s.scene_id) AS scene_ids,
           array_agg(s.s2_product_id ORDER BY o.sensing_time, s.scene_id) AS s2_product_ids,
           string_agg(DISTINCT s.model_version, ',' ORDER BY s.model_version) AS model_versions
    FROM {SCHEMA}.lake_observation AS o
    JOIN {SCHEMA}.scene AS s ON s.scene_id = o.scene_id
    WHERE o.lake_id = l.lake_id AND o.present AND s.superseded_by IS NULL
) AS p ON true
WHERE l.status <> 'superseded'
"""

_GROWING_LAKES = f"""
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
LEFT JOIN {GROWTH} AS g ON g.lake_id = c.lake_id
WHERE c.change_kind = 'grown' OR c.area_m2 > f.area_m2
"""

_ATTRIBUTE_TYPES = ",\n    ".join(f"{k} double precision" for k in ATTRIBUTES)

_LAKES_AS_OF = f"""
CREATE FUNCTION {SCHEMA}.lakes_as_of(ts timestamptz)
RETURNS TABLE (
    lake_id bigint, aoi_names text, status text, change_kind text, valid_from timestamptz,
    {_ATTRIBUTE_TYPES},
    model_version text, first_seen timestamptz, last_seen timestamptz, n_observations integer,
    geom geometry(MultiPolygon, {SRID})
)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT v.lake_id, {_names("v.geom")}, v.status, v.change_kind, lower(v.valid),
           {_cols("v")},
           v.model_version, seen.first_seen, seen.last_seen, CAST(seen.n AS integer),
           v.geom
    FROM {SCHEMA}.lake_version AS v
    LEFT JOIN LATERAL (
        SELECT min(o.sensing_time) FILTER (WHERE o.present) AS first_seen,
               max(o.sensing_time) FILTER (WHERE o.present) AS last_seen, count(*) AS n
        FROM {SCHEMA}.lake_observation AS o
        JOIN {SCHEMA}.scene AS s ON s.scene_id = o.scene_id
        WHERE o.lake_id = v.lake_id AND o.sensing_time <= ts AND s.superseded_by IS NULL
    ) AS seen ON true
    WHERE v.valid @> ts AND v.status = 'active'
    ORDER BY v.lake_id
$$
"""

_COMMENTS = {
    "VIEW current_lakes": "Active lakes with their current geometry and attributes, the change kind, area change "
    "(m², %) and model version of their latest version; aoi_names: the AOIs whose outline the lake's outline "
    "intersects.",
    "VIEW lake_changes": "One row per lake version: validity [valid_from, valid_to), change kind, attributes, "
    "area change since the previous version (m², % of its water area).",
    "VIEW growing_lakes": "Current lakes whose latest version grew or whose area exceeds their first version's; "
    "trend_*: the Theil-Sen rate of lake_growth (m²/year, 95 % interval).",
    "VIEW lake_growth": "One row per lake: present observations (one per sensing time) n_obs, first / last seen, "
    "the current version's area change (m², %), the Theil-Sen growth rate of area (m²/year, median of pairwise "
    "slopes: robust to outliers) with its 95 % confidence interval (Sen 1968), source scenes, Sentinel-2 "
    "products and model versions.",
    "FUNCTION lake_growth_rate(bigint)": "One lake's present observations (current scenes, one per sensing "
    "time): count, first / last, Theil-Sen growth rate of area (m²/year) and its 95 % confidence interval.",
    "FUNCTION lakes_as_of(timestamptz)": "Active lake versions valid at the given instant (sensing time), with "
    "their attributes, model version, first / last seen and observation count up to that instant, and the AOIs "
    "whose outline each version's outline intersects.",
}

# --- the objects of 0006, for the downgrade (literal copies) -------------------------------------

_OLD_CURRENT_LAKES = f"""
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

_OLD_LAKE_CHANGES = f"""
CREATE VIEW {SCHEMA}.lake_changes AS
SELECT v.version_id, v.lake_id, {_names("l.geom")} AS aoi_names, lower(v.valid) AS valid_from,
       upper(v.valid) AS valid_to, v.change_kind, v.status, v.area_m2, v.area_change_m2,
       v.growth_rate_m2_per_year, v.scene_id, v.model_version, v.geom
FROM {SCHEMA}.lake_version AS v
JOIN {SCHEMA}.lake AS l ON l.lake_id = v.lake_id
"""

_OLD_GROWING_LAKES = f"""
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

_OLD_LAKES_AS_OF = f"""
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
_OLD_COMMENTS = {
    "VIEW current_lakes": "Active lakes with their current geometry and the change kind of their latest version; "
    "aoi_names: the AOIs whose outline the lake's outline intersects.",
    "VIEW lake_changes": "One row per lake version: validity [valid_from, valid_to), change kind, area change (m²).",
    "VIEW growing_lakes": "Current lakes whose latest version grew or whose area exceeds their first version's.",
    "FUNCTION lakes_as_of(timestamptz)": "Active lake versions valid at the given instant (sensing time), "
    "with the AOIs whose outline each version's outline intersects.",
}


def _comment(comments: dict[str, str]) -> None:
    for target, comment in comments.items():
        kind, name = target.split(" ", 1)
        quoted = comment.replace("'", "''")
        op.execute(f"COMMENT ON {kind} {SCHEMA}.{name} IS '{quoted}'")


def _drop_views() -> None:
    for view in VIEWS:
        op.execute(f"DROP VIEW {SCHEMA}.{view}")
    op.execute(f"DROP FUNCTION {FUNCTION}")


def _read_only(views: Sequence[str]) -> None:
    op.execute(f"REVOKE INSERT, UPDATE ON {', '.join(f'{SCHEMA}.{v}' for v in views)} FROM {WRITER_ROLE}")
    op.execute(f"REVOKE EXECUTE ON FUNCTION {FUNCTION} FROM PUBLIC")


def upgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    for table in TABLES:
        op.execute(
            f"ALTER TABLE {SCHEMA}.{table} " + ", ".join(f"ADD COLUMN {k} double precision" for k in NEW_ATTRIBUTES)
        )
        for name, comment in NEW_ATTRIBUTES.items():
            quoted = comment.replace("'", "''")
            op.execute(f"COMMENT ON COLUMN {SCHEMA}.{table}.{name} IS '{quoted}'")
    op.execute(_rehash(ATTRIBUTES))
    _drop_views()
    for sql in (_CURRENT_LAKES, _LAKE_CHANGES, _GROWTH_RATE, _LAKE_GROWTH, _GROWING_LAKES, _LAKES_AS_OF):
        op.execute(sql)
    _comment(_COMMENTS)
    _read_only((*VIEWS, "lake_growth"))
    op.execute(f"REVOKE EXECUTE ON FUNCTION {GROWTH_RATE}(bigint) FROM PUBLIC")
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    _drop_views()
    op.execute(f"DROP VIEW {GROWTH}")
    op.execute(f"DROP FUNCTION {GROWTH_RATE}(bigint)")
    for sql in (_OLD_CURRENT_LAKES, _OLD_LAKE_CHANGES, _OLD_GROWING_LAKES, _OLD_LAKES_AS_OF):
        op.execute(sql)
    _comment(_OLD_COMMENTS)
    _read_only(VIEWS)
    for table in TABLES:
        op.execute(f"ALTER TABLE {SCHEMA}.{table} " + ", ".join(f"DROP COLUMN {k}" for k in NEW_ATTRIBUTES))
    op.execute(_rehash(OLD_ATTRIBUTES))
    op.execute("RESET ROLE")
