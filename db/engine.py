"""SQLAlchemy engine factory for the inventory database (PostgreSQL + PostGIS, psycopg 3)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

APPLICATION_NAME = "glacial-lakes"
"""Shown in ``pg_stat_activity.application_name`` unless the caller passes another."""


def normalise_url(url: str | URL) -> URL:
    """Parse ``url`` and force the psycopg 3 driver.

    ``postgresql://`` and ``postgres://`` (the libpq spellings, as in ``DATABASE_URL``) and
    any other PostgreSQL driver become ``postgresql+psycopg://``.

    Raises:
        ValueError: the URL is not a PostgreSQL URL.
    """
    if isinstance(url, str) and url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string(hide_password=True)}")
    return parsed.set(drivername="postgresql+psycopg")


def make_engine(url: str | URL, **kw: Any) -> sa.Engine:
    """Create an engine on ``url`` with the psycopg 3 driver.

    Args:
        url: SQLAlchemy or libpq-style URL (``postgresql://user@host:port/db``).
        **kw: passed to :func:`sqlalchemy.create_engine`; ``connect_args`` are merged with
            the defaults (``application_name``).

    Returns:
        An engine with ``pool_pre_ping`` on, so connections dropped by a server restart are
        replaced instead of failing the next statement.
    """
    parsed = normalise_url(url)
    connect_args = dict(kw.pop("connect_args", {}))
    if "application_name" not in parsed.query:
        connect_args.setdefault("application_name", APPLICATION_NAME)
    kw.setdefault("pool_pre_ping", True)
    return sa.create_engine(parsed, connect_args=connect_args, **kw)


def connect_kwargs(url: str | URL) -> dict[str, Any]:
    """``url`` as :func:`psycopg.connect` keyword arguments (a password with spaces or quotes is safe)."""
    parsed = normalise_url(url)
    fields = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "password": parsed.password,
        "dbname": parsed.database,
    }
    return {k: v for k, v in fields.items() if v is not None} | dict(parsed.query)
