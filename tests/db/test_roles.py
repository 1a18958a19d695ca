"""S1: the privilege matrix of ``lake_reader`` and ``lake_writer``, tried with real LOGIN roles.

Every forbidden statement is also run as the database superuser (rolled back) and must succeed
there, so a denial below is a missing privilege, never a typo. ``tests/db/test_schema.py`` checks
a few statements per role; this module covers every table, view, function and the schema, and a
complete merge and inventory import as the writer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from db.engine import make_engine
from db.importer import import_inventory
from db.merge import ensure_aoi, merge_scene
from db.schema import OWNER_ROLE, READER_ROLE, SCHEMA, WRITER_ROLE, metadata
from tests import helpers as h

pytestmark = pytest.mark.db

TABLES = tuple(t.name for t in metadata.sorted_tables)
VIEWS = (
    "current_lakes",
    "lake_changes",
    "growing_lakes",
    "lake_growth",
    "lake_area_timeseries",
    "superseded_observations",
    "lake_glacier_context",
    "glof_screening",
    "glof_flagged_lakes",
)
FUNCTIONS = (
    "lakes_as_of(timestamptz)",
    "glacier_context(geometry)",
    "lake_area_series(bigint)",
    "lake_row_hash(text, bytea, double precision[], timestamptz, timestamptz, timestamptz, integer)",
)
WRITER_MAY_DELETE = ("lake_version", "lake_lineage", "lake_observation", "glacier", "glacier_source")
"""History is rebuilt; a glacier re-import replaces its source's outlines."""
EVEREST = ("icimod_glacial_lakes_2015", "GL_3basins_2015_everest_subset.geojson")
"""The real ICIMOD 2015 Khumbu subset (42 lakes), under the ``realdata`` fixture's folder."""


def _table(name: str) -> str:
    return f"{SCHEMA}.{name}"


def table_statements(name: str, *, dml: bool = True) -> dict[str, str]:
    """Statements on one table; the DML ones touch no row (valid whatever the constraints)."""
    column = metadata.tables[_table(name)].columns.keys()[0]
    t = _table(name)
    out = {
        f"truncate {name}": f"TRUNCATE {t} CASCADE",
        f"drop {name}": f"DROP TABLE {t} CASCADE",
        f"alter {name}": f"ALTER TABLE {t} ADD COLUMN intruder int",
        f"index {name}": f"CREATE INDEX intruder_idx ON {t} ({column})",
    }
    if dml:
        out |= {
            f"insert {name}": f"INSERT INTO {t} SELECT * FROM {t} WHERE false",
            f"update {name}": f"UPDATE {t} SET {column} = {column} WHERE false",
            f"delete {name}": f"DELETE FROM {t} WHERE false",
        }
    return out


def object_statements() -> dict[str, str]:
    """DDL on the views, functions and schemas: forbidden to both roles."""
    out = {}
    for view in VIEWS:
        out[f"drop {view}"] = f"DROP VIEW {_table(view)} CASCADE"
        out[f"rename {view}"] = f"ALTER VIEW {_table(view)} RENAME TO intruder"
    for function in FUNCTIONS:
        out[f"drop {function}"] = f"DROP FUNCTION {_table(function)} CASCADE"  # views use glacier_context
        out[f"rename {function}"] = f"ALTER FUNCTION {_table(function)} RENAME TO intruder"
    out |= {
        "create table in schema": f"CREATE TABLE {_table('intruder')} (x int)",
        "create view in schema": f"CREATE VIEW {_table('intruder')} AS SELECT 1 AS x",
        "create function in schema": f"CREATE FUNCTION {_table('intruder')}() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "create table in public": "CREATE TABLE public.intruder (x int)",
        "create schema": "CREATE SCHEMA intruder",
        "rename schema": f"ALTER SCHEMA {SCHEMA} RENAME TO intruder",
        "drop schema": f"DROP SCHEMA {SCHEMA} CASCADE",
        "become owner": f"SET ROLE {OWNER_ROLE}",
        "join owner group": f"GRANT {OWNER_ROLE} TO CURRENT_USER",
        "join writer group": f"GRANT {WRITER_ROLE} TO CURRENT_USER",
    }
    return out


def reader_forbidden() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in TABLES:
        out |= table_statements(name)
    return out | object_statements()


def writer_forbidden() -> dict[str, str]:
    out: dict[str, str] = {}
    # (Joining lake_writer is a no-op for a member, not a denial: leave it to the reader.)
    for name in TABLES:
        statements = table_statements(name)
        allowed = {f"insert {name}", f"update {name}"}
        if name in WRITER_MAY_DELETE:
            allowed.add(f"delete {name}")
        out |= {op: sql for op, sql in statements.items() if op not in allowed}
    return out | {op: sql for op, sql in object_statements().items() if op != "join writer group"}


def attempt(engine: sa.Engine, sql: str) -> type | None:
    """Run ``sql`` in a transaction that is always rolled back; the psycopg error class, or None."""
    with engine.connect() as conn:
        try:
            conn.execute(sa.text(sql))
        except sa.exc.DBAPIError as exc:
            return type(exc.orig)
        finally:
            conn.rollback()
    return None


@pytest.fixture
def login_as(db_url: str, pg_url_base: str) -> Iterator[Callable[..., tuple[str, sa.Engine]]]:
    """Factory: a throw-away LOGIN role (cluster-wide, uniquely named) in ``group``, and an engine as it."""
    admin = make_engine(pg_url_base, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    local_admin = make_engine(db_url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    made: list[tuple[str, sa.Engine]] = []

    def _login(group: str | None) -> tuple[str, sa.Engine]:
        name, password = f"gl_test_{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
        member = f" IN ROLE {group}" if group else ""
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'{member}"))
        engine = make_engine(make_url(db_url).set(username=name, password=password), poolclass=sa.pool.NullPool)
        made.append((name, engine))
        return name, engine

    yield _login
    for name, engine in made:
        engine.dispose()
        with local_admin.connect() as conn:  # anything it managed to own goes first
            conn.execute(sa.text(f"DROP OWNED BY {name}"))
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {name}"))
    local_admin.dispose()
    admin.dispose()


def _seed(engine: sa.Engine) -> None:
    ensure_aoi(engine, "khumbu", h.footprint(), h.UTM)
    for s in h.scenario("khumbu")[:4]:
        merge_scene(engine, s)


def _public_grants(role_engine: sa.Engine, admin: sa.Engine) -> int:
    """Try ``GRANT ALL ... TO PUBLIC`` on every table and view, committed (a non-owner only gets a
    warning, not an error); return how many privileges PUBLIC holds afterwards (must be 0).
    """
    with role_engine.begin() as conn:
        for name in (*TABLES, *VIEWS):
            conn.execute(sa.text(f"GRANT ALL ON {_table(name)} TO PUBLIC"))
    with admin.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_class AS c CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', "
                    "'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p(priv) "
                    "WHERE c.relnamespace = CAST(:s AS regnamespace) AND c.relkind IN ('r', 'v') "
                    "AND has_table_privilege('public', c.oid, p.priv)"
                ),
                {"s": SCHEMA},
            ).scalar_one()
        )


def _matrix(role_engine: sa.Engine, admin: sa.Engine, statements: dict[str, str]) -> dict[str, object]:
    outcomes = {op: attempt(role_engine, sql) for op, sql in statements.items()}
    control = {op: attempt(admin, sql) for op, sql in statements.items()}
    return {
        "public_privileges_after_grant_attempts": _public_grants(role_engine, admin),
        "attempted": len(outcomes),
        "succeeded": sorted(op for op, err in outcomes.items() if err is None),
        "denied_other_than_privilege": sorted(
            op for op, err in outcomes.items() if err not in (None, psycopg.errors.InsufficientPrivilege)
        ),
        "control_failures_as_superuser": sorted(op for op, err in control.items() if err is not None),
    }


def test_reader_is_denied_every_write_and_ddl_but_reads_views_and_functions(
    engine: sa.Engine, login_as: Callable[..., tuple[str, sa.Engine]]
) -> None:
    _seed(engine)
    _, reader = login_as(READER_ROLE)
    figures = _matrix(reader, engine, reader_forbidden())
    with reader.connect() as conn, engine.connect() as own:
        views = {v: conn.execute(sa.text(f"SELECT count(*) FROM {_table(v)}")).scalar_one() for v in VIEWS}
        expected = {v: own.execute(sa.text(f"SELECT count(*) FROM {_table(v)}")).scalar_one() for v in VIEWS}
        as_of = conn.execute(sa.text(f"SELECT count(*) FROM {SCHEMA}.lakes_as_of(:t)"), {"t": h.T0}).scalar_one()
        lake_id = own.execute(sa.text(f"SELECT min(lake_id) FROM {SCHEMA}.lake")).scalar_one()
        series = conn.execute(
            sa.text(f"SELECT count(*) FROM {SCHEMA}.lake_area_series(:l)"), {"l": lake_id}
        ).scalar_one()
    h.write_report("roles", {"reader": {**figures, "forbidden_succeeded": len(figures["succeeded"])}})

    assert figures["attempted"] >= 8 * len(TABLES)
    assert figures["control_failures_as_superuser"] == []
    assert figures["succeeded"] == [] and figures["denied_other_than_privilege"] == []
    assert figures["public_privileges_after_grant_attempts"] == 0
    assert views == expected and views["current_lakes"] > 0 and views["lake_area_timeseries"] > 0
    assert as_of == 4 and series > 1


def test_writer_merges_and_imports_but_cannot_change_the_schema(
    engine: sa.Engine, login_as: Callable[..., tuple[str, sa.Engine]], realdata: Path
) -> None:
    name, writer = login_as(WRITER_ROLE)
    # A whole merge history as the writer: new lakes, growth, a drain (history rebuilt: DELETE).
    ensure_aoi(writer, "khumbu", h.footprint(), h.UTM)
    reports = [merge_scene(writer, s) for s in h.scenario("khumbu")]
    everest = realdata.joinpath(*EVEREST)
    imported = import_inventory(writer, everest, aoi_name="everest", when=datetime(2015, 10, 1, tzinfo=UTC))
    with writer.connect() as conn:
        assert conn.execute(sa.text("SELECT current_user")).scalar_one() == name
    versions = h.content(engine, "khumbu")["lake_version"][0]
    figures = _matrix(writer, engine, writer_forbidden())
    h.write_report(
        "roles",
        {"writer": {**figures, "forbidden_succeeded": len(figures["succeeded"]), "merges": len(reports)}},
    )

    assert sum(r.versions_added for r in reports) == versions > len(reports)
    assert any(r.disappeared for r in reports) and any(r.reappeared for r in reports)
    assert imported.lakes == 42 and imported.attributes_written == 42
    assert figures["control_failures_as_superuser"] == []
    assert figures["succeeded"] == [] and figures["denied_other_than_privilege"] == []
    assert figures["public_privileges_after_grant_attempts"] == 0


def test_functions_are_executable_by_the_groups_only(login_as: Callable[..., tuple[str, sa.Engine]]) -> None:
    """A login role in neither group has no EXECUTE (0001 and 0002 revoke it from PUBLIC)."""
    nobody, _ = login_as(None)
    reader, _ = login_as(READER_ROLE)
    writer, writer_engine = login_as(WRITER_ROLE)
    roles = (nobody, reader, writer)
    with writer_engine.connect() as conn:
        granted = {
            (role, fn): conn.execute(
                sa.text("SELECT has_function_privilege(:r, :f, 'EXECUTE')"), {"r": role, "f": _table(fn)}
            ).scalar_one()
            for role in roles
            for fn in FUNCTIONS
        }
    assert granted == {(role, fn): role != nobody for role in roles for fn in FUNCTIONS}
