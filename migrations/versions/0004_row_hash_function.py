"""The lake row's content hash as one SQL function: ``inventory.lake_row_hash``.

Revision ID: 0004_row_hash_function
Revises: 0003_merge_performance
Create Date: 2026-12-01

Every statement of the merge that writes a ``lake`` row sets ``row_hash``, the md5 of the row's
content: status, outline (hex WKB), the attribute values, the three time stamps (epoch seconds)
and the observation count, NULL as '', joined by '|'. That text was spliced into five statements;
this function is now its one definition. The attributes arrive as one ``float8[]`` in column
order, so that a new attribute column changes the callers' array, not this signature. The text
is the same as before, so rows hashed before this revision keep their hash.

No ``SET search_path`` (that would keep the planner from inlining the function into the merge's
bulk statements, a per-row call at tens of thousands of rows); every function in the body is
named by schema instead (COALESCE, CAST and EXTRACT are syntax). Created as ``lake_owner`` so the
default privileges of 0001 grant EXECUTE to ``lake_reader`` and ``lake_writer``; not executable
by PUBLIC (as every function here). No COMMIT inside: the chain runs in one transaction.

Frozen history: the argument list below is literal, not read from the live code.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from db.schema import OWNER_ROLE, SCHEMA

# revision identifiers, used by Alembic.
revision: str = "0004_row_hash_function"
down_revision: str | Sequence[str] | None = "0003_merge_performance"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = f"{SCHEMA}.lake_row_hash(text, bytea, double precision[], timestamptz, timestamptz, timestamptz, integer)"

_EPOCH = "COALESCE(CAST(EXTRACT(epoch FROM {}) AS text), '')"
_LAKE_ROW_HASH = f"""
CREATE FUNCTION {SCHEMA}.lake_row_hash(
    status text, outline_wkb bytea, attributes double precision[],
    first_seen timestamptz, last_seen timestamptz, last_observed timestamptz, n_observations integer)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.md5(pg_catalog.concat_ws('|',
        status,
        pg_catalog.encode(outline_wkb, 'hex'),
        pg_catalog.array_to_string(attributes, '|', ''),
        {_EPOCH.format("first_seen")},
        {_EPOCH.format("last_seen")},
        {_EPOCH.format("last_observed")},
        COALESCE(CAST(n_observations AS text), '')))
$$
"""

_COMMENT = (
    "Content hash of a lake row: md5 of status, outline WKB (hex), attributes (column order), "
    "first/last seen and last observed (epoch s) and observation count, NULL as empty, joined by |."
)


def upgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    op.execute(_LAKE_ROW_HASH)
    op.execute(f"COMMENT ON FUNCTION {FUNCTION} IS '{_COMMENT}'")
    op.execute(f"REVOKE EXECUTE ON FUNCTION {FUNCTION} FROM PUBLIC")
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}")
    op.execute("RESET ROLE")
