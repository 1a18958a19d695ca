"""Outline validity checked when an outline is written, not on every update of its row.

Revision ID: 0005_geometry_validity_triggers
Revises: 0004_row_hash_function
Create Date: 2026-12-01

The ``ck_<table>_geom_valid`` CHECKs of 0001 (``ST_IsValid(geom)`` on ``lake``, ``lake_version``
and ``lake_observation``) ran on every updated row, whichever columns the update set: each merge
re-validated the outline of every lake row it moved on (time stamps, count, hash) and of every
version it closed (only ``valid`` changes), about 9 µs a row, some 0.3 s per statement at 31,698
lakes. PostgreSQL has no per-column CHECK, so each CHECK becomes two constraint triggers with the
same test in their ``WHEN`` clause, which fire (and reject the row) only for an invalid outline:

* ``ck_<table>_geom_valid``: ``AFTER INSERT``, ``WHEN (NOT ST_IsValid(NEW.geom))``;
* ``ck_<table>_geom_valid_on_update``: ``AFTER UPDATE OF geom``, ``WHEN (NEW.geom IS DISTINCT FROM
  OLD.geom AND NOT ST_IsValid(NEW.geom))``: an update that does not set the outline, or sets it to
  the bytes it had (PostGIS ``=`` is exact), keeps an outline already checked.

The guarantee is the CHECK's: every stored outline is valid or NULL (a NULL ``WHEN`` does not
fire, as a NULL CHECK passes). AFTER, so the row tested is the final one, after any BEFORE
trigger; not deferrable, so the row is rejected at the end of its statement, with SQLSTATE 23514
(``check_violation``) and the constraint's name, as the CHECK did. The rows already stored were
validated by the CHECK. The downgrade restores the CHECKs (validating every row again).

The trigger function runs only to raise; it is owned by ``lake_owner`` and not executable by
PUBLIC (trigger functions are not called through EXECUTE). No COMMIT inside: the chain runs in
one transaction. Frozen history: the table list below is literal.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from db.schema import OWNER_ROLE, SCHEMA

# revision identifiers, used by Alembic.
revision: str = "0005_geometry_validity_triggers"
down_revision: str | Sequence[str] | None = "0004_row_hash_function"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("lake", "lake_version", "lake_observation")
FUNCTION = f"{SCHEMA}.reject_invalid_geom()"

_REJECT = f"""
CREATE FUNCTION {FUNCTION}
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'new row for relation "%" violates check constraint "%"', TG_TABLE_NAME, TG_NAME
        USING ERRCODE = 'check_violation', CONSTRAINT = TG_NAME, TABLE = TG_TABLE_NAME,
              SCHEMA = TG_TABLE_SCHEMA, DETAIL = 'ST_IsValid(geom) is false';
END
$$
"""

_COMMENT = "Raises check_violation: a WHEN clause found an invalid outline (ST_IsValid false)."


def _triggers(table: str) -> tuple[str, str]:
    on = f"ON {SCHEMA}.{table} FOR EACH ROW"
    return (
        f"CREATE CONSTRAINT TRIGGER ck_{table}_geom_valid AFTER INSERT {on} "
        f"WHEN (NOT ST_IsValid(NEW.geom)) EXECUTE FUNCTION {FUNCTION}",
        f"CREATE CONSTRAINT TRIGGER ck_{table}_geom_valid_on_update AFTER UPDATE OF geom {on} "
        f"WHEN (NEW.geom IS DISTINCT FROM OLD.geom AND NOT ST_IsValid(NEW.geom)) EXECUTE FUNCTION {FUNCTION}",
    )


def upgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    op.execute(_REJECT)
    op.execute(f"COMMENT ON FUNCTION {FUNCTION} IS '{_COMMENT}'")
    op.execute(f"REVOKE EXECUTE ON FUNCTION {FUNCTION} FROM PUBLIC")
    for table in TABLES:
        op.execute(f"ALTER TABLE {SCHEMA}.{table} DROP CONSTRAINT ck_{table}_geom_valid")
        for statement in _triggers(table):
            op.execute(statement)
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute(f"SET ROLE {OWNER_ROLE}")
    for table in TABLES:
        op.execute(f"DROP TRIGGER ck_{table}_geom_valid_on_update ON {SCHEMA}.{table}")
        op.execute(f"DROP TRIGGER ck_{table}_geom_valid ON {SCHEMA}.{table}")
        op.execute(f"ALTER TABLE {SCHEMA}.{table} ADD CONSTRAINT ck_{table}_geom_valid CHECK (ST_IsValid(geom))")
    op.execute(f"DROP FUNCTION {FUNCTION}")
    op.execute("RESET ROLE")
