"""A ledger you can trust: one ``ingest_run`` row per flow run, acquisitions per AOI.

Revision ID: 0009_run_ledger
Revises: 0008_supersede
Create Date: 2026-12-01

* ``ingest_run.run_key`` (AOI, window, source, model) is no longer unique: a rerun of the same
  window is a new run with its own row, not an overwrite of the earlier one's. The row is keyed by
  the Prefect flow-run id instead (unique; NULL for none). ``request`` records what was asked
  (window, source with any URL query removed, model): what ``glacial-lakes runs`` shows.
* ``acquisition.product_id`` is unique per AOI, not globally: two AOIs that find the same product
  each keep their own status (processed in one, skipped in the other).
* Status comments name the new values: ``quarantined`` (an acquisition whose input is
  permanently bad), ``partial`` and ``crashed`` (runs).

The downgrade keeps every run (a repeated ``run_key`` gets its run id appended, so the old
unique constraint holds) and one acquisition row per product (the first found); the others, per
AOI duplicates the old schema cannot hold, are deleted. Runs as ``lake_owner``; no COMMIT inside.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from db.schema import OWNER_ROLE, SCHEMA

# revision identifiers, used by Alembic.
revision: str = "0009_run_ledger"
down_revision: str | Sequence[str] | None = "0008_supersede"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACQUISITION_STATUS = "found | processed | skipped | failed | quarantined"
RUN_STATUS = "running | committed | partial | failed | crashed"


def upgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    op.drop_constraint("ingest_run_run_key_key", "ingest_run", schema=SCHEMA, type_="unique")
    op.create_unique_constraint("ingest_run_flow_run_id_key", "ingest_run", ["flow_run_id"], schema=SCHEMA)
    op.add_column(
        "ingest_run",
        sa.Column(
            "request",
            JSONB(),
            server_default="{}",
            nullable=False,
            comment="what was asked: window (UTC days), source (no query string), model",
        ),
        schema=SCHEMA,
    )
    op.alter_column(
        "ingest_run",
        "status",
        existing_type=sa.Text(),
        existing_nullable=False,
        comment=RUN_STATUS,
        existing_comment="running | committed | failed",
        schema=SCHEMA,
    )
    op.drop_constraint("acquisition_product_id_key", "acquisition", schema=SCHEMA, type_="unique")
    op.create_unique_constraint(
        "acquisition_aoi_id_product_id_key", "acquisition", ["aoi_id", "product_id"], schema=SCHEMA
    )
    op.alter_column(
        "acquisition",
        "status",
        existing_type=sa.Text(),
        existing_nullable=False,
        existing_server_default="found",
        comment=ACQUISITION_STATUS,
        existing_comment="found | processed | skipped | failed",
        schema=SCHEMA,
    )
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    op.alter_column(
        "acquisition",
        "status",
        existing_type=sa.Text(),
        existing_nullable=False,
        existing_server_default="found",
        comment="found | processed | skipped | failed",
        existing_comment=ACQUISITION_STATUS,
        schema=SCHEMA,
    )
    op.drop_constraint("acquisition_aoi_id_product_id_key", "acquisition", schema=SCHEMA, type_="unique")
    op.execute(
        f"""
        DELETE FROM {SCHEMA}.acquisition a USING {SCHEMA}.acquisition b
        WHERE a.product_id = b.product_id AND a.acquisition_id > b.acquisition_id
        """
    )
    op.create_unique_constraint("acquisition_product_id_key", "acquisition", ["product_id"], schema=SCHEMA)
    op.alter_column(
        "ingest_run",
        "status",
        existing_type=sa.Text(),
        existing_nullable=False,
        comment="running | committed | failed",
        existing_comment=RUN_STATUS,
        schema=SCHEMA,
    )
    op.drop_column("ingest_run", "request", schema=SCHEMA)
    op.drop_constraint("ingest_run_flow_run_id_key", "ingest_run", schema=SCHEMA, type_="unique")
    op.execute(
        f"""
        UPDATE {SCHEMA}.ingest_run r SET run_key = r.run_key || ':' || r.run_id
        WHERE EXISTS (
            SELECT 1 FROM {SCHEMA}.ingest_run o WHERE o.run_key = r.run_key AND o.run_id < r.run_id
        )
        """
    )
    op.create_unique_constraint("ingest_run_run_key_key", "ingest_run", ["run_key"], schema=SCHEMA)
    op.execute("RESET ROLE")
