"""Room on the lake table's pages for in-place (HOT) updates by the merge.

Revision ID: 0003_merge_performance
Revises: 0002_queries
Create Date: 2026-11-28

Every merge updates the ``lake`` row of each lake its scene saw (time stamps, observation count,
content hash), usually without touching an indexed column. PostgreSQL then writes the new row
version on the same page without new index entries (a HOT update) — but only where the page
has room. With ``fillfactor = 45`` a page holding rows written by a merge can take a new
version of every one of them in the next merge, so updating a whole AOI's lakes skips the GiST
and btree index inserts (about half the cost of the update at 31,698 lakes). The table takes
about twice the pages; the observation and version tables, which grow with every scene, keep
the default.

The setting applies to pages written from now on (existing rows move as they are updated, or at
the next ``VACUUM FULL``). Runs as ``lake_owner``, the table's owner. No COMMIT inside: the
chain runs in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from db.schema import OWNER_ROLE, SCHEMA

# revision identifiers, used by Alembic.
revision: str = "0003_merge_performance"
down_revision: str | Sequence[str] | None = "0002_queries"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LAKE_FILLFACTOR = 45
"""Percent of a page filled by inserts: under half, so each row can get a new version beside it."""


def upgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    op.execute(f"ALTER TABLE {SCHEMA}.lake SET (fillfactor = {LAKE_FILLFACTOR})")
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    op.execute(f"ALTER TABLE {SCHEMA}.lake RESET (fillfactor)")
    op.execute("RESET ROLE")
