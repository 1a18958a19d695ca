"""No spatial index on observations: nothing looks them up by place.

Revision ID: 0007_observation_indexes
Revises: 0006_spatial_lake_identity
Create Date: 2026-12-01

``idx_lake_observation_geom`` (GiST on ``lake_observation.geom``, from 0001) was written for every
observation of every merge (some 31,698 index insertions a scene at High-Mountain-Asia scale) and
read by no query: the merge finds a lake's observations by lake and time
(``ix_lake_observation_lake_id_sensing_time``) or by scene (``ix_lake_observation_scene_id``), and
the series function and view read them by lake. QGIS users map ``current_lakes``,
``lake_changes`` and ``lakes_as_of`` (lake and version outlines, both still indexed). The downgrade
builds the index again. Runs as ``lake_owner``; no COMMIT inside.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from db.schema import OWNER_ROLE, SCHEMA

# revision identifiers, used by Alembic.
revision: str = "0007_observation_indexes"
down_revision: str | Sequence[str] | None = "0006_spatial_lake_identity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    op.execute(f"DROP INDEX {SCHEMA}.idx_lake_observation_geom")
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    op.execute(f"CREATE INDEX idx_lake_observation_geom ON {SCHEMA}.lake_observation USING gist (geom)")
    op.execute("RESET ROLE")
