"""GLOF screening: configurable rules and the views of the lakes they flag.

Revision ID: 0013_glof_screening
Revises: 0012_glaciers
Create Date: 2026-12-02

Screening, not a hazard assessment: a flag says a lake meets a first-pass criterion of the kind
published screenings use (large, at or near a glacier, growing; steep surroundings), nothing
about its dam, its outburst probability or what lies downstream.

* ``glof_rule``: one row per rule with its thresholds (the owner of the configuration: the views
  read it, so a change applies to the next query; no flow, setting or refresh is involved).
  Defaults after published first-pass screenings (lakes ≥ 0.1 km², within 500 m of their glacier,
  area growth ≥ 10 % a decade): ``contact_growth`` (within 500 m of a glacier outline, ≥ 0.1 km²,
  ≥ 4 present observations, Theil–Sen growth with a 95 % interval above zero and a rate ≥ 1 % of
  the area per year) and ``steep_surroundings`` (within 500 m of a glacier, ≥ 0.1 km², mean slope
  of the 0–200 m ring ≥ 30°). CHECKs bound every threshold.
* ``glof_screening`` (view): one row per current lake and rule that fired, with the inputs the
  rule read and the thresholds it applied (``inputs`` jsonb), and the model version of the lake's
  current version. Computed from ``lake`` (area, slope), ``glacier_context`` (revision 0012) and
  ``lake_growth_rate`` (revision 0011) whenever it is read: never stale after a run, a glacier
  re-import or a rule change.
* ``glof_flagged_lakes`` (view): one row per flagged lake (key ``lake_id``), the rules that fired
  (sorted, comma-separated), their inputs keyed by rule, and the lake's outline (MultiPolygon,
  EPSG:4326; a QGIS layer).

Objects are created as ``lake_owner`` (default privileges: the writer reads and may UPDATE the
rules; a CHECK admits only the rule names the view knows). The views are read-only. Frozen history: the SQL is literal.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from db.schema import OWNER_ROLE, SCHEMA, WRITER_ROLE

# revision identifiers, used by Alembic.
revision: str = "0013_glof_screening"
down_revision: str | Sequence[str] | None = "0012_glaciers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RULE = f"{SCHEMA}.glof_rule"
SCREENING = f"{SCHEMA}.glof_screening"
FLAGGED = f"{SCHEMA}.glof_flagged_lakes"

# The cheap filters (area, then the glacier distance) come before the growth series, which is
# computed only for the lakes that pass them (LATERAL, per lake).
_SCREENING = f"""
CREATE VIEW {SCREENING} AS
SELECT l.lake_id, r.rule,
       jsonb_build_object(
           'area_m2', l.area_m2, 'glacier_distance_m', gc.glacier_distance_m, 'lake_type', gc.lake_type,
           'rgi_id', gc.rgi_id, 'n_obs', g.n_obs, 'growth_rate_m2_per_year', g.growth_rate_m2_per_year,
           'growth_rate_ci_low', g.growth_rate_ci_low, 'growth_rate_ci_high', g.growth_rate_ci_high,
           'growth_pct_per_year', 100.0 * g.growth_rate_m2_per_year / l.area_m2,
           'max_glacier_distance_m', r.max_glacier_distance_m, 'min_area_m2', r.min_area_m2,
           'min_observations', r.min_observations, 'min_growth_pct_per_year', r.min_growth_pct_per_year
       ) AS inputs,
       lv.model_version
FROM {RULE} AS r
JOIN {SCHEMA}.lake AS l ON l.status = 'active' AND l.area_m2 >= r.min_area_m2
CROSS JOIN LATERAL {SCHEMA}.glacier_context(l.geom) AS gc
CROSS JOIN LATERAL {SCHEMA}.lake_growth_rate(l.lake_id) AS g
LEFT JOIN LATERAL (
    SELECT v.model_version FROM {SCHEMA}.lake_version AS v
    WHERE v.lake_id = l.lake_id ORDER BY lower(v.valid) DESC LIMIT 1
) AS lv ON true
WHERE r.rule = 'contact_growth' AND r.enabled
  AND gc.glacier_distance_m <= r.max_glacier_distance_m
  AND g.n_obs >= r.min_observations AND g.growth_rate_ci_low > 0
  AND 100.0 * g.growth_rate_m2_per_year / l.area_m2 >= r.min_growth_pct_per_year
UNION ALL
SELECT l.lake_id, r.rule,
       jsonb_build_object(
           'area_m2', l.area_m2, 'glacier_distance_m', gc.glacier_distance_m, 'lake_type', gc.lake_type,
           'rgi_id', gc.rgi_id, 'surrounding_slope_deg', l.surrounding_slope_deg,
           'max_glacier_distance_m', r.max_glacier_distance_m, 'min_area_m2', r.min_area_m2,
           'min_surrounding_slope_deg', r.min_surrounding_slope_deg
       ),
       lv.model_version
FROM {RULE} AS r
JOIN {SCHEMA}.lake AS l ON l.status = 'active' AND l.area_m2 >= r.min_area_m2
    AND l.surrounding_slope_deg >= r.min_surrounding_slope_deg
CROSS JOIN LATERAL {SCHEMA}.glacier_context(l.geom) AS gc
LEFT JOIN LATERAL (
    SELECT v.model_version FROM {SCHEMA}.lake_version AS v
    WHERE v.lake_id = l.lake_id ORDER BY lower(v.valid) DESC LIMIT 1
) AS lv ON true
WHERE r.rule = 'steep_surroundings' AND r.enabled
  AND gc.glacier_distance_m <= r.max_glacier_distance_m
"""

_FLAGGED = f"""
CREATE VIEW {FLAGGED} AS
SELECT l.lake_id,
       (SELECT string_agg(n.name, ',' ORDER BY n.name) FROM {SCHEMA}.aoi AS n
        WHERE public.ST_Intersects(n.geom, l.geom)) AS aoi_names,
       s.rules, s.inputs, s.model_version, l.area_m2, l.geom
FROM (
    SELECT lake_id, string_agg(rule, ',' ORDER BY rule) AS rules, jsonb_object_agg(rule, inputs) AS inputs,
           min(model_version) AS model_version
    FROM {SCREENING}
    GROUP BY lake_id
) AS s
JOIN {SCHEMA}.lake AS l ON l.lake_id = s.lake_id
"""

RULE_COMMENT = (
    "GLOF screening rules and their thresholds (screening, not a hazard assessment); read by glof_screening "
    "whenever it is queried."
)
_COMMENTS = {
    f"VIEW {SCREENING}": "One row per active lake and enabled GLOF screening rule that fires: inputs (jsonb) holds "
    "the figures the rule read (area m², glacier distance m, Theil-Sen growth m²/year and %/year of the area, "
    "slope °) and the thresholds it applied. Screening, not a hazard assessment.",
    f"VIEW {FLAGGED}": "Lakes flagged by at least one GLOF screening rule: rules (sorted, comma-separated), inputs "
    "keyed by rule, the current outline (EPSG:4326). Screening, not a hazard assessment.",
}


def upgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    op.create_table(
        "glof_rule",
        sa.Column("rule", sa.Text(), nullable=False, comment="contact_growth | steep_surroundings"),
        sa.Column("enabled", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "max_glacier_distance_m",
            sa.Float(),
            nullable=False,
            comment="a lake farther than this geodesic distance from every glacier outline is not screened, m",
        ),
        sa.Column("min_area_m2", sa.Float(), nullable=False, comment="smallest current lake area screened, m²"),
        sa.Column(
            "min_observations",
            sa.Integer(),
            nullable=True,
            comment="contact_growth: fewest present observations (one per sensing time) of the growth series",
        ),
        sa.Column(
            "min_growth_pct_per_year",
            sa.Float(),
            nullable=True,
            comment="contact_growth: smallest Theil-Sen growth rate, % of the current area per year (and its 95 % "
            "interval above zero)",
        ),
        sa.Column(
            "min_surrounding_slope_deg",
            sa.Float(),
            nullable=True,
            comment="steep_surroundings: smallest mean DEM slope of the 0-200 m ring around the lake, degrees",
        ),
        sa.PrimaryKeyConstraint("rule"),
        sa.CheckConstraint("rule IN ('contact_growth', 'steep_surroundings')", name="ck_glof_rule_known"),
        sa.CheckConstraint(
            "max_glacier_distance_m >= 0 AND max_glacier_distance_m <= 10000 AND min_area_m2 >= 0",
            name="ck_glof_rule_common_ranges",
        ),
        sa.CheckConstraint(
            "rule <> 'contact_growth' OR (min_observations BETWEEN 3 AND 1000 "
            "AND min_growth_pct_per_year >= 0 AND min_growth_pct_per_year <= 1000)",
            name="ck_glof_rule_contact_growth",
        ),
        sa.CheckConstraint(
            "rule <> 'steep_surroundings' OR (min_surrounding_slope_deg >= 0 AND min_surrounding_slope_deg <= 90)",
            name="ck_glof_rule_steep_surroundings",
        ),
        schema=SCHEMA,
        comment=RULE_COMMENT,
    )
    op.execute(
        f"INSERT INTO {RULE} (rule, description, max_glacier_distance_m, min_area_m2, min_observations, "
        "min_growth_pct_per_year, min_surrounding_slope_deg) VALUES "
        "('contact_growth', 'a large lake at or near a glacier whose area grows significantly', "
        "500, 100000, 4, 1, NULL), "
        "('steep_surroundings', 'a large lake near a glacier under steep slopes (mass movement into the lake)', "
        "500, 100000, NULL, NULL, 30)"
    )
    op.execute(_SCREENING)
    op.execute(_FLAGGED)
    for target, comment in _COMMENTS.items():
        kind, name = target.split(" ", 1)
        quoted = comment.replace("'", "''")
        op.execute(f"COMMENT ON {kind} {name} IS '{quoted}'")
    op.execute(f"REVOKE INSERT, UPDATE ON {SCREENING}, {FLAGGED} FROM {WRITER_ROLE}")
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    op.execute(f"DROP VIEW {FLAGGED}")
    op.execute(f"DROP VIEW {SCREENING}")
    op.execute(f"DROP TABLE {RULE}")
    op.execute("RESET ROLE")
