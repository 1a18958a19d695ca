"""Run the Alembic migrations programmatically (no ``alembic.ini`` needed).

The revisions live in the ``migrations`` package shipped beside ``db``; its ``env.py``
records the applied revision in ``public.alembic_version``. Migrations run as the user in the
URL, which must be a superuser, or a member of ``lake_owner`` with CREATE on the database
when the extensions and roles already exist.

After an upgrade, the group roles are granted ``public.alembic_version`` (read for
``lake_reader`` / ``lake_writer``, so every login can check the revision; read and write for
``lake_owner``, so an owner login can run later migrations) when the migrating user owns it.
Commands other than ``glacial-lakes db upgrade`` never migrate an external database: they call
:func:`require_head`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import pool
from sqlalchemy.engine import make_url

from db.engine import make_engine
from db.merge.rebuild import rebuild_history
from db.records import MergeConfig
from db.schema import OWNER_ROLE, READER_ROLE, WRITER_ROLE

VERSION_TABLE_SCHEMA = "public"


class SchemaBehindError(RuntimeError):
    """The database is not at the shipped head revision (one line saying what to run)."""


def script_location() -> Path:
    """Directory of the ``migrations`` package (found without importing it)."""
    sibling = Path(__file__).resolve().parent.parent / "migrations"
    if (sibling / "env.py").exists():
        return sibling
    spec = importlib.util.find_spec("migrations")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the migrations package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at our revisions and at ``url``.

    The URL travels in ``config.attributes`` rather than the ini options, so ``%`` in an
    encoded password needs no escaping.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (one transaction), then grant the version table.

    At head, the lakes a migration queued (``lake_rebuild_queue``: their facts changed) get their
    histories derived again, with the shipped history rule on the head schema, in a second
    transaction; a crash between the two leaves them queued for the next upgrade.
    """
    command.upgrade(alembic_config(url), revision)
    _grant_version_table(url)
    if current(url) == head():
        _rebuild_queued(url)


def _rebuild_queued(url: str) -> int:
    """Derive the queued lakes' histories again and empty the queue; returns how many."""
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT l.lake_id, l.status FROM inventory.lake_rebuild_queue AS q "
                    "JOIN inventory.lake AS l USING (lake_id) ORDER BY l.lake_id FOR UPDATE OF q"
                )
            ).all()
            if rows:
                status = {int(i): str(s) for i, s in rows}
                rebuild_history(conn, sorted(status), status, MergeConfig())
                conn.execute(
                    sa.text("DELETE FROM inventory.lake_rebuild_queue WHERE lake_id = ANY(:ids)"),
                    {"ids": sorted(status)},
                )
            return len(rows)
    finally:
        engine.dispose()


def _grant_version_table(url: str) -> None:
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            owns = conn.execute(
                sa.text(
                    "SELECT pg_has_role(current_user, tableowner, 'USAGE') FROM pg_tables "
                    "WHERE schemaname = :s AND tablename = 'alembic_version'"
                ),
                {"s": VERSION_TABLE_SCHEMA},
            ).scalar()
            groups = conn.execute(
                sa.text("SELECT count(*) FROM pg_roles WHERE rolname IN (:o, :w, :r)"),
                {"o": OWNER_ROLE, "w": WRITER_ROLE, "r": READER_ROLE},
            ).scalar_one()
            if not owns or groups != 3:  # a non-owner cannot grant; before 0001 there are no groups
                return
            table = f"{VERSION_TABLE_SCHEMA}.alembic_version"
            conn.execute(sa.text(f"GRANT SELECT ON {table} TO {READER_ROLE}, {WRITER_ROLE}"))
            conn.execute(sa.text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {OWNER_ROLE}"))
    finally:
        engine.dispose()


def downgrade(url: str, revision: str) -> None:
    """Downgrade the database at ``url`` to ``revision`` (``"base"`` removes the schema)."""
    command.downgrade(alembic_config(url), revision)


def head() -> str | None:
    """The head revision of the shipped migrations."""
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def current(url: str) -> str | None:
    """Revision applied to the database at ``url``; None when it was never migrated."""
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table_schema": VERSION_TABLE_SCHEMA})
            return context.get_current_revision()
    finally:
        engine.dispose()


def require_head(url: str) -> None:
    """Refuse a database that is not at the shipped head revision.

    Raises:
        SchemaBehindError: never migrated, behind, or at a revision this code does not know
            (one line naming the server and database, and what to run).
    """
    shipped, applied = head(), current(url)
    if applied == shipped:
        return
    where = make_url(url).render_as_string(hide_password=True)
    if applied is None:
        state = "has no inventory schema"
    elif applied in {r.revision for r in ScriptDirectory.from_config(alembic_config("")).walk_revisions()}:
        state = f"is at revision {applied}, behind {shipped}"
    else:
        raise SchemaBehindError(f"{where} is at revision {applied}, unknown to this version (newer code?)")
    raise SchemaBehindError(f"{where} {state}: run `glacial-lakes db upgrade` as the database owner")
