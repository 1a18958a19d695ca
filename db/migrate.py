"""Run the Alembic migrations programmatically (no ``alembic.ini`` needed).

The revisions live in the ``migrations`` package shipped beside ``db``; its ``env.py``
records the applied revision in ``public.alembic_version``. Migrations run as the user in the
URL, which must be a superuser, or a member of ``lake_owner`` with CREATE on the database
when the extensions and roles already exist.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import pool

from db.engine import make_engine

VERSION_TABLE_SCHEMA = "public"


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
    """Upgrade the database at ``url`` to ``revision`` (one transaction)."""
    command.upgrade(alembic_config(url), revision)


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
