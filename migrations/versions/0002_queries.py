"""Time-series queries: ``inventory.lake_area_series(bigint)`` and view ``lake_area_timeseries``.

Revision ID: 0002_queries
Revises: 0001
Create Date: 2026-11-27

Both read ``lake_observation`` (the facts) joined to ``scene``: one row per observation of a
lake, wet (``present``, area in m² measured in local UTM) or seen dry (``present`` false,
area NULL), ordered by sensing time (UTC). Places hidden by cloud or nodata have no row.

Objects are created as ``lake_owner`` so the default privileges of 0001 grant SELECT on the
view and EXECUTE on the function to ``lake_reader`` and ``lake_writer``; as in 0001 the view is
made read-only for the writer and the function is not executable by PUBLIC. The downgrade drops
both. No COMMIT inside: the chain runs in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from db.schema import OWNER_ROLE, SCHEMA, WRITER_ROLE

# revision identifiers, used by Alembic.
revision: str = "0002_queries"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = f"{SCHEMA}.lake_area_series(bigint)"
VIEW = f"{SCHEMA}.lake_area_timeseries"

# search_path pinned (every object is schema-qualified) so callers cannot shadow operators.
# Ties at one sensing time (one acquisition processed twice) keep a stable order by scene.
_LAKE_AREA_SERIES = f"""
CREATE FUNCTION {SCHEMA}.lake_area_series(lake_id bigint)
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

# observation_id first: a unique key, so QGIS and other clients can page and select rows.
_LAKE_AREA_TIMESERIES = f"""
CREATE VIEW {VIEW} AS
SELECT o.observation_id, o.lake_id, o.sensing_time, o.present, o.area_m2, s.s2_product_id
FROM {SCHEMA}.lake_observation AS o
JOIN {SCHEMA}.scene AS s ON s.scene_id = o.scene_id
"""

_COMMENTS = {
    f"FUNCTION {FUNCTION}": "Observations of one lake ordered by sensing time: present flag, "
    "water area (m², local UTM; NULL when seen dry) and scene.",
    f"VIEW {VIEW}": "One row per lake observation: sensing time, present flag, water area (m², "
    "local UTM; NULL when seen dry) and the Sentinel-2 product it came from.",
}


def upgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    op.execute(_LAKE_AREA_SERIES)
    op.execute(_LAKE_AREA_TIMESERIES)
    for target, comment in _COMMENTS.items():
        quoted = comment.replace("'", "''")
        op.execute(f"COMMENT ON {target} IS '{quoted}'")
    # The default privileges gave the writer INSERT/UPDATE on the view and PUBLIC EXECUTE on
    # the function; neither is wanted (same policy as the objects of 0001).
    op.execute(f"REVOKE INSERT, UPDATE ON {VIEW} FROM {WRITER_ROLE}")
    op.execute(f"REVOKE EXECUTE ON FUNCTION {FUNCTION} FROM PUBLIC")
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    op.execute(f"DROP VIEW IF EXISTS {VIEW}")
    op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}")
    op.execute("RESET ROLE")
