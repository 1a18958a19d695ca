"""Throw-away databases on the test server (maintenance statements in autocommit)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from db.engine import make_engine


def admin_sql(base: str, sql: str) -> None:
    """Run one statement on the maintenance database in autocommit (CREATE/DROP DATABASE)."""
    engine = make_engine(base, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(sql))
    finally:
        engine.dispose()


@contextmanager
def fresh_database(pg_url_base: str, template: str | None) -> Iterator[str]:
    """URL of a new database, cloned from ``template`` (a database URL) or empty when None; dropped after."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    clause = f' TEMPLATE "{sa.engine.make_url(template).database}"' if template else ""
    admin_sql(pg_url_base, f'CREATE DATABASE "{name}"{clause}')
    try:
        yield sa.engine.make_url(pg_url_base).set(database=name).render_as_string(hide_password=False)
    finally:
        admin_sql(pg_url_base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
