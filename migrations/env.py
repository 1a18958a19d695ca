"""Alembic environment for the inventory schema.

The database URL comes from, in order: ``config.attributes["url"]`` (set by
:mod:`db.migrate`), an open connection in ``config.attributes["connection"]``,
``alembic -x url=...``, the ``DATABASE_URL`` environment variable, then ``sqlalchemy.url``.

The version table is ``public.alembic_version``: it must exist before revision 0001 creates
schema ``inventory`` and must survive the downgrade that drops it.

The whole upgrade (or downgrade) chain runs in one transaction, so a failing revision leaves
the database as it was.
"""

from __future__ import annotations

import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from geoalchemy2 import alembic_helpers
from sqlalchemy import pool

from db.engine import make_engine, normalise_url
from db.schema import SCHEMA, metadata

VERSION_TABLE_SCHEMA = "public"

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str | None:
    x_args = context.get_x_argument(as_dictionary=True)
    url = (
        config.attributes.get("url")
        or x_args.get("url")
        or os.environ.get("DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
    )
    return url or None


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Compare only our schema: PostGIS's tables in ``public`` are not ours to drop."""
    if type_ == "schema":
        return name == SCHEMA
    return True


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """GeoAlchemy2's filter, plus: keep indexes the revisions create by hand.

    GiST and btree indexes are written in the revisions, not in ``db.schema`` (the metadata
    has ``spatial_index=False``), so a reflected index with no metadata counterpart is
    expected, not something autogenerate should drop.
    """
    if type_ == "index" and reflected and compare_to is None:
        return False
    return alembic_helpers.include_object(obj, name, type_, reflected, compare_to)


def _configure(**kw: Any) -> None:
    context.configure(
        target_metadata=metadata,
        version_table_schema=VERSION_TABLE_SCHEMA,
        include_schemas=True,
        include_name=include_name,
        include_object=include_object,
        render_item=alembic_helpers.render_item,
        process_revision_directives=alembic_helpers.writer,
        compare_type=True,
        transaction_per_migration=False,
        **kw,
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``)."""
    url = _url()
    if url is None:
        raise SystemExit("no database URL: pass -x url=... or set DATABASE_URL")
    _configure(url=normalise_url(url), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run against a live database in one transaction."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = _url()
    if url is None:
        raise SystemExit("no database URL: pass -x url=... or set DATABASE_URL")
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            _configure(connection=conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
