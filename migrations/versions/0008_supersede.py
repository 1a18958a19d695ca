"""Reruns supersede: ``scene.superseded_by`` / ``superseded_at`` and the ``superseded_observations`` view.

Revision ID: 0008_supersede
Revises: 0007_observation_indexes
Create Date: 2026-12-01

A rerun's scene replaces the AOI's earlier scenes of the same Sentinel-2 product
(:mod:`db.merge.supersede`): they get ``superseded_by`` (the rerun's scene) and ``superseded_at``;
their observations stay, but histories are derived from the other observations only, and a lake
only they saw takes status ``superseded`` (no version: out of ``current_lakes``, ``lake_changes``
and ``lakes_as_of``). The series function and view list current observations only; the new view
``superseded_observations`` lists the others, with the scene that replaced theirs.

Objects are created as ``lake_owner`` (default privileges grant reading); the view is read-only for
the writer, as every view. The downgrade drops the view and the columns (superseded scenes' marks
are lost; their rows stay). No COMMIT inside.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from db.schema import OWNER_ROLE, SCHEMA, WRITER_ROLE

# revision identifiers, used by Alembic.
revision: str = "0008_supersede"
down_revision: str | Sequence[str] | None = "0007_observation_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEW = f"{SCHEMA}.superseded_observations"

_VIEW = f"""
CREATE VIEW {VIEW} AS
SELECT o.observation_id, o.lake_id, o.sensing_time, o.present, o.area_m2, o.scene_id,
       s.model_version, s.superseded_by, s.superseded_at, o.geom
FROM {SCHEMA}.lake_observation AS o
JOIN {SCHEMA}.scene AS s ON s.scene_id = o.scene_id
WHERE s.superseded_by IS NOT NULL
"""

_SERIES = f"""
CREATE OR REPLACE FUNCTION {SCHEMA}.lake_area_series(lake_id bigint)
RETURNS TABLE (sensing_time timestamptz, present boolean, area_m2 double precision, scene_id bigint)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.sensing_time, o.present, o.area_m2, o.scene_id
    FROM {SCHEMA}.lake_observation AS o
    JOIN {SCHEMA}.scene AS s ON s.scene_id = o.scene_id
    WHERE o.lake_id = lake_area_series.lake_id AND s.superseded_by IS NULL
    ORDER BY o.sensing_time, o.scene_id, o.observation_id
$$
"""

_OLD_SERIES = f"""
CREATE OR REPLACE FUNCTION {SCHEMA}.lake_area_series(lake_id bigint)
RETURNS TABLE (sensing_time timestamptz, present boolean, area_m2 double precision, scene_id bigint)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.sensing_time, o.present, o.area_m2, o.scene_id
    FROM {SCHEMA}.lake_observation AS o
    WHERE o.lake_id = lake_area_series.lake_id
    ORDER BY o.sensing_time, o.scene_id, o.observation_id
$$
"""

_TIMESERIES = f"""
CREATE OR REPLACE VIEW {SCHEMA}.lake_area_timeseries AS
SELECT o.observation_id, o.lake_id, o.sensing_time, o.present, o.area_m2, s.s2_product_id
FROM {SCHEMA}.lake_observation AS o
JOIN {SCHEMA}.scene AS s ON s.scene_id = o.scene_id
"""


def upgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    op.execute(
        f"ALTER TABLE {SCHEMA}.scene ADD COLUMN superseded_by bigint REFERENCES {SCHEMA}.scene (scene_id), "
        "ADD COLUMN superseded_at timestamptz"
    )
    op.execute(
        f"COMMENT ON COLUMN {SCHEMA}.scene.superseded_by IS "
        "'the rerun scene that replaced this one; its observations no longer count (NULL: current)'"
    )
    op.execute(
        f"COMMENT ON COLUMN {SCHEMA}.lake.status IS 'active | disappeared | superseded (only superseded scenes saw it)'"
    )
    op.execute(f"CREATE INDEX ix_scene_aoi_id_s2_product_id ON {SCHEMA}.scene (aoi_id, s2_product_id)")
    op.execute(_VIEW)
    op.execute(
        f"COMMENT ON VIEW {VIEW} IS 'Observations of superseded scenes (replaced by a rerun): kept, no longer "
        "counted; superseded_by names the scene that replaced theirs.'"
    )
    op.execute(f"REVOKE INSERT, UPDATE ON {VIEW} FROM {WRITER_ROLE}")
    op.execute(_SERIES)
    op.execute(_TIMESERIES + "WHERE s.superseded_by IS NULL")
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    op.execute(_TIMESERIES)
    op.execute(_OLD_SERIES)
    op.execute(f"DROP VIEW {VIEW}")
    op.execute(f"DROP INDEX {SCHEMA}.ix_scene_aoi_id_s2_product_id")
    op.execute(f"ALTER TABLE {SCHEMA}.scene DROP COLUMN superseded_at, DROP COLUMN superseded_by")
    op.execute(f"COMMENT ON COLUMN {SCHEMA}.lake.status IS 'active | disappeared'")
    op.execute("RESET ROLE")
