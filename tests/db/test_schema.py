"""The migrated schema: round trip, constraints, privileges, views and the as-of queries."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import make_url

from db import migrate, queries
from db.engine import make_engine
from db.schema import OWNER_ROLE, READER_ROLE, SCHEMA, WRITER_ROLE, metadata

pytestmark = pytest.mark.db

T0 = datetime(2023, 7, 1, 5, 30, tzinfo=UTC)
T1 = datetime(2023, 8, 1, 5, 30, tzinfo=UTC)
SQUARE = "MULTIPOLYGON(((78.10 42.10, 78.11 42.10, 78.11 42.11, 78.10 42.11, 78.10 42.10)))"
BIGGER = "MULTIPOLYGON(((78.10 42.10, 78.12 42.10, 78.12 42.11, 78.10 42.11, 78.10 42.10)))"
OTHER = "MULTIPOLYGON(((78.20 42.20, 78.21 42.20, 78.21 42.21, 78.20 42.21, 78.20 42.20)))"
BOW_TIE = "MULTIPOLYGON(((78.0 42.0, 78.1 42.1, 78.1 42.0, 78.0 42.1, 78.0 42.0)))"


def _geom(param: str) -> str:
    return f"ST_GeomFromText(:{param}, 4326)"


def _aoi(conn: sa.Connection, name: str = "tien-shan") -> int:
    return conn.execute(
        sa.text(f"INSERT INTO {SCHEMA}.aoi (name, geom, utm_epsg) VALUES (:n, {_geom('g')}, 32643) RETURNING aoi_id"),
        {"n": name, "g": "MULTIPOLYGON(((78 42, 79 42, 79 43, 78 43, 78 42)))"},
    ).scalar_one()


def _lake(conn: sa.Connection, wkt: str = SQUARE, area: float = 15_000.0, status: str = "active") -> int:
    return conn.execute(
        sa.text(
            f"INSERT INTO {SCHEMA}.lake (status, geom, area_m2, first_seen, last_seen, last_observed) "
            f"VALUES (:s, {_geom('g')}, :area, :t0, :t1, :t1) RETURNING lake_id"
        ),
        {"s": status, "g": wkt, "area": area, "t0": T0, "t1": T1},
    ).scalar_one()


def _version(
    conn: sa.Connection,
    lake_id: int,
    lower: datetime,
    upper: datetime | None,
    kind: str,
    area: float,
    wkt: str = SQUARE,
    status: str = "active",
    area_change: float | None = None,
) -> None:
    conn.execute(
        sa.text(
            f"INSERT INTO {SCHEMA}.lake_version (lake_id, valid, change_kind, status, geom, area_m2, area_change_m2) "
            f"VALUES (:l, tstzrange(:lo, :hi, '[)'), :k, :s, {_geom('g')}, :area, :dA)"
        ),
        {"l": lake_id, "lo": lower, "hi": upper, "k": kind, "s": status, "g": wkt, "area": area, "dA": area_change},
    )


def _seed(engine: sa.Engine) -> dict[str, int]:
    """One lake that grew at T1 and one that disappeared at T1, one scene, two observations."""
    with engine.begin() as conn:
        aoi_id = _aoi(conn)
        grown = _lake(conn, BIGGER, 15_000.0)
        _version(conn, grown, T0, T1, "new", 10_000.0)
        _version(conn, grown, T1, None, "grown", 15_000.0, BIGGER, area_change=5_000.0)
        gone = _lake(conn, OTHER, 8_000.0, status="disappeared")
        _version(conn, gone, T0, T1, "new", 8_000.0, OTHER)
        _version(conn, gone, T1, None, "disappeared", 0.0, OTHER, status="disappeared")
        scene_id = conn.execute(
            sa.text(
                f"INSERT INTO {SCHEMA}.scene (scene_key, aoi_id, sensing_time, s2_product_id, model_version, "
                "params_hash) VALUES ('k1', :a, :t, 'S2A_X', 'm1', 'p1') RETURNING scene_id"
            ),
            {"a": aoi_id, "t": T1},
        ).scalar_one()
        for lake_id, present in ((grown, True), (gone, False)):
            conn.execute(
                sa.text(
                    f"INSERT INTO {SCHEMA}.lake_observation (scene_id, lake_id, sensing_time, present) "
                    "VALUES (:s, :l, :t, :p)"
                ),
                {"s": scene_id, "l": lake_id, "t": T1, "p": present},
            )
    return {"aoi": aoi_id, "grown": grown, "gone": gone, "scene": scene_id}


def _sqlstate_error(engine: sa.Engine, sql: str, params: dict[str, object] | None = None) -> type | None:
    """Run ``sql`` in its own rolled-back transaction; the psycopg error class it raised, or None."""
    with engine.connect() as conn:
        try:
            conn.execute(sa.text(sql), params or {})
        except sa.exc.DBAPIError as exc:
            return type(exc.orig)
        finally:
            conn.rollback()
    return None


VIEWS = {
    "current_lakes",
    "lake_changes",
    "growing_lakes",
    "lake_growth",
    "lake_area_timeseries",
    "superseded_observations",
    "lake_glacier_context",
    "glof_screening",
    "glof_flagged_lakes",
}
"""Every view the revisions create (QGIS layers): read-only for everyone."""


# -- migrations --------------------------------------------------------------------------------


def test_upgrade_downgrade_upgrade_round_trip(db_url: str, engine: sa.Engine) -> None:
    head = migrate.head()
    assert head is not None and migrate.current(db_url) == head
    migrate.downgrade(db_url, "base")
    assert migrate.current(db_url) is None
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regnamespace(:s)"), {"s": SCHEMA}).scalar() is None
        assert conn.execute(sa.text("SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'")).scalar() == 0
        roles = conn.execute(sa.text("SELECT rolname FROM pg_roles WHERE rolname LIKE 'lake\\_%'")).scalars().all()
        assert {OWNER_ROLE, WRITER_ROLE, READER_ROLE} <= set(roles)  # cluster-wide: kept
    migrate.upgrade(db_url)
    assert migrate.current(db_url) == head
    inspector = sa.inspect(engine)
    assert set(inspector.get_table_names(schema=SCHEMA)) == {t.name for t in metadata.sorted_tables}
    assert set(inspector.get_view_names(schema=SCHEMA)) == VIEWS


def test_tables_match_the_metadata(db_url: str) -> None:
    # Raises AutogenerateDiffsDetected when db.schema and the revisions disagree.
    command.check(migrate.alembic_config(db_url))


def test_geometry_columns_are_typed_and_indexed(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        typed = conn.execute(
            sa.text("SELECT f_table_name, type, srid FROM geometry_columns WHERE f_table_schema = :s"), {"s": SCHEMA}
        ).all()
        gist = conn.execute(
            sa.text("SELECT indexname FROM pg_indexes WHERE schemaname = :s AND indexdef LIKE '%USING gist%'"),
            {"s": SCHEMA},
        ).scalars()
        gist_names = set(gist)
    assert {(t, ty, srid) for t, ty, srid in typed} >= {
        ("lake", "MULTIPOLYGON", 4326),
        ("current_lakes", "MULTIPOLYGON", 4326),
        ("lake_changes", "MULTIPOLYGON", 4326),
        ("growing_lakes", "MULTIPOLYGON", 4326),
        ("lake_growth", "MULTIPOLYGON", 4326),
    }
    assert {"idx_lake_geom", "idx_lake_version_geom", "idx_scene_valid_footprint", "idx_aoi_geom"} <= gist_names


# -- constraints -------------------------------------------------------------------------------


def test_overlapping_versions_of_one_lake_are_rejected(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        lake_id = _lake(conn)
        _version(conn, lake_id, T0, T1, "new", 10_000.0)
        _version(conn, lake_id, T1, None, "grown", 15_000.0)  # adjacent [T0,T1) [T1,∞): allowed
    overlap = (
        f"INSERT INTO {SCHEMA}.lake_version (lake_id, valid, change_kind, status) "
        "VALUES (:l, tstzrange(:lo, NULL), 'reshaped', 'active')"
    )
    raised = _sqlstate_error(engine, overlap, {"l": lake_id, "lo": T0 + timedelta(days=3)})
    assert raised is psycopg.errors.ExclusionViolation


def test_invalid_geometries_are_rejected(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        aoi_id = _aoi(conn)
        lake_id = _lake(conn)
        scene_id = conn.execute(
            sa.text(
                f"INSERT INTO {SCHEMA}.scene (scene_key, aoi_id, sensing_time, s2_product_id, model_version, "
                "params_hash) VALUES ('k', :a, :t, 'S2', 'm', 'p') RETURNING scene_id"
            ),
            {"a": aoi_id, "t": T0},
        ).scalar_one()
    statements = {
        "lake": f"INSERT INTO {SCHEMA}.lake (geom, first_seen, last_seen, last_observed) "
        f"VALUES ({_geom('g')}, now(), now(), now())",
        "lake_version": f"INSERT INTO {SCHEMA}.lake_version (lake_id, valid, change_kind, status, geom) "
        f"VALUES ({lake_id}, tstzrange(now(), NULL), 'new', 'active', {_geom('g')})",
        "lake_observation": f"INSERT INTO {SCHEMA}.lake_observation (scene_id, lake_id, sensing_time, present, geom) "
        f"VALUES ({scene_id}, {lake_id}, now(), true, {_geom('g')})",
    }
    outcomes = {table: _sqlstate_error(engine, sql, {"g": BOW_TIE}) for table, sql in statements.items()}
    assert outcomes == dict.fromkeys(statements, psycopg.errors.CheckViolation)
    # The same statements succeed with a valid outline: the CHECK is what rejected them.
    assert {table: _sqlstate_error(engine, sql, {"g": SQUARE}) for table, sql in statements.items()} == dict.fromkeys(
        statements
    )
    # An update that writes an invalid outline is rejected too; one that keeps the outline is not.
    updates = {
        "lake": f"UPDATE {SCHEMA}.lake SET geom = {_geom('g')} WHERE lake_id = {lake_id}",
        "lake_version": f"UPDATE {SCHEMA}.lake_version SET geom = {_geom('g')} WHERE lake_id = {lake_id}",
        "lake_observation": f"UPDATE {SCHEMA}.lake_observation SET geom = {_geom('g')} WHERE lake_id = {lake_id}",
    }
    with engine.begin() as conn:
        conn.execute(sa.text(statements["lake_version"]), {"g": SQUARE})
        conn.execute(sa.text(statements["lake_observation"]), {"g": SQUARE})
    outcomes = {table: _sqlstate_error(engine, sql, {"g": BOW_TIE}) for table, sql in updates.items()}
    assert outcomes == dict.fromkeys(updates, psycopg.errors.CheckViolation)
    assert {table: _sqlstate_error(engine, sql, {"g": SQUARE}) for table, sql in updates.items()} == dict.fromkeys(
        updates
    )


# -- privileges --------------------------------------------------------------------------------


@pytest.fixture
def login_as(db_url: str, pg_url_base: str) -> Iterator[Callable[[str], sa.Engine]]:
    """Factory: a throw-away LOGIN role granted ``group``, and an engine connected as it."""
    admin = make_engine(pg_url_base, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    made: list[tuple[str, sa.Engine]] = []

    def _login(group: str) -> sa.Engine:
        name, password = f"gl_test_{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE {group}"))
        url = make_url(db_url).set(username=name, password=password)
        engine = make_engine(url, poolclass=sa.pool.NullPool)
        made.append((name, engine))
        return engine

    yield _login
    for name, engine in made:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {name}"))
    admin.dispose()


def test_reader_can_only_read(engine: sa.Engine, login_as: Callable[[str], sa.Engine]) -> None:
    ids = _seed(engine)
    reader = login_as(READER_ROLE)
    with reader.connect() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM {SCHEMA}.lake")).scalar() == 2
        assert conn.execute(sa.text(f"SELECT count(*) FROM {SCHEMA}.current_lakes")).scalar() == 1
        assert conn.execute(sa.text(f"SELECT count(*) FROM {SCHEMA}.lakes_as_of(:t)"), {"t": T0}).scalar() == 2
    attempts = {
        "insert": f"INSERT INTO {SCHEMA}.ingest_run (run_key, status) VALUES ('r', 'running')",
        "update": f"UPDATE {SCHEMA}.lake SET status = 'disappeared' WHERE lake_id = {ids['grown']}",
        "delete": f"DELETE FROM {SCHEMA}.lake_observation",
        "truncate": f"TRUNCATE {SCHEMA}.lake_version",
        "create in schema": f"CREATE TABLE {SCHEMA}.intruder (x int)",
        "create in public": "CREATE TABLE public.intruder (x int)",
    }
    succeeded = {op: sql for op, sql in attempts.items() if _sqlstate_error(reader, sql) is None}
    assert succeeded == {}
    denied = {_sqlstate_error(reader, sql) for sql in attempts.values()}
    assert denied == {psycopg.errors.InsufficientPrivilege}


def test_writer_writes_but_cannot_change_the_schema(engine: sa.Engine, login_as: Callable[[str], sa.Engine]) -> None:
    ids = _seed(engine)
    writer = login_as(WRITER_ROLE)
    with writer.begin() as conn:
        run_id = conn.execute(
            sa.text(f"INSERT INTO {SCHEMA}.ingest_run (run_key, status) VALUES ('r1', 'running') RETURNING run_id")
        ).scalar_one()
        conn.execute(sa.text(f"UPDATE {SCHEMA}.ingest_run SET status = 'committed' WHERE run_id = :r"), {"r": run_id})
        conn.execute(sa.text(f"DELETE FROM {SCHEMA}.lake_version WHERE lake_id = :l"), {"l": ids["gone"]})
        conn.execute(sa.text(f"DELETE FROM {SCHEMA}.lake_observation WHERE lake_id = :l"), {"l": ids["gone"]})
    forbidden = {
        "delete lake": f"DELETE FROM {SCHEMA}.lake",
        "delete scene": f"DELETE FROM {SCHEMA}.scene",
        "truncate": f"TRUNCATE {SCHEMA}.lake_version",
        "drop table": f"DROP TABLE {SCHEMA}.lake_lineage",
        "drop view": f"DROP VIEW {SCHEMA}.growing_lakes",
        "alter table": f"ALTER TABLE {SCHEMA}.lake ADD COLUMN x int",
        "create in schema": f"CREATE TABLE {SCHEMA}.intruder (x int)",
        "create in public": "CREATE TABLE public.intruder (x int)",
    }
    errors = {op: _sqlstate_error(writer, sql) for op, sql in forbidden.items()}
    assert errors == dict.fromkeys(forbidden, psycopg.errors.InsufficientPrivilege)
    # The views are not updatable anyway; the grants must not pretend otherwise.
    with writer.connect() as conn:
        view_writes = conn.execute(
            sa.text(
                "SELECT c.relname, p.priv FROM pg_class AS c "
                "CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p(priv) "
                "WHERE c.relnamespace = CAST(:s AS regnamespace) AND c.relkind = 'v' "
                "AND has_table_privilege(c.oid, p.priv)"
            ),
            {"s": SCHEMA},
        ).all()
    assert sorted(view_writes) == [(v, "SELECT") for v in sorted(VIEWS)]


# -- views and as-of queries -------------------------------------------------------------------


def test_lakes_as_of_returns_the_version_valid_then(engine: sa.Engine) -> None:
    ids = _seed(engine)
    sql = sa.text(f"SELECT lake_id, change_kind, area_m2 FROM {SCHEMA}.lakes_as_of(:t) ORDER BY lake_id")
    with engine.connect() as conn:
        before = conn.execute(sql, {"t": T0 - timedelta(seconds=1)}).all()
        first = conn.execute(sql, {"t": T0 + timedelta(days=1)}).all()
        boundary = conn.execute(sql, {"t": T1}).all()  # [lower, upper): T1 belongs to the new version
    assert before == []
    assert first == [(ids["grown"], "new", 10_000.0), (ids["gone"], "new", 8_000.0)]
    assert boundary == [(ids["grown"], "grown", 15_000.0)]  # the disappeared lake is gone


def test_lakes_as_of_helper_returns_a_geodataframe(engine: sa.Engine) -> None:
    ids = _seed(engine)
    then = queries.lakes_as_of(engine, T0 + timedelta(days=1))
    now = queries.lakes_as_of(engine, None)
    naive = queries.lakes_as_of(engine, (T0 + timedelta(days=1)).replace(tzinfo=None), aoi="tien-shan")
    nothing = queries.lakes_as_of(engine, T0 - timedelta(days=1))
    elsewhere = queries.lakes_as_of(engine, None, aoi="karakoram")
    assert then.crs.to_epsg() == 4326 and now.crs.to_epsg() == 4326
    assert list(then.columns) == list(queries.LAKE_COLUMNS) == list(now.columns)
    assert then["lake_id"].tolist() == [ids["grown"], ids["gone"]] == naive["lake_id"].tolist()
    assert then["area_m2"].tolist() == [10_000.0, 8_000.0]
    assert now["lake_id"].tolist() == [ids["grown"]] and now["change_kind"].tolist() == ["grown"]
    assert now.geometry.iloc[0].geom_type == "MultiPolygon" and now.geometry.iloc[0].is_valid
    assert now["aoi_names"].tolist() == ["tien-shan"]
    assert len(nothing) == 0 and len(elsewhere) == 0 and list(nothing.columns) == list(queries.LAKE_COLUMNS)


def test_views_current_changes_growing(engine: sa.Engine) -> None:
    ids = _seed(engine)
    with engine.connect() as conn:
        current = conn.execute(sa.text(f"SELECT lake_id, change_kind, valid_from FROM {SCHEMA}.current_lakes")).all()
        changes = conn.execute(
            sa.text(
                f"SELECT lake_id, valid_from, valid_to, change_kind, area_change_m2 FROM {SCHEMA}.lake_changes "
                "ORDER BY lake_id, valid_from"
            )
        ).all()
        growing = conn.execute(sa.text(f"SELECT lake_id, growth_m2, growth_pct FROM {SCHEMA}.growing_lakes")).all()
    assert current == [(ids["grown"], "grown", T1)]
    assert [(r.lake_id, r.valid_from, r.valid_to, r.change_kind) for r in changes] == [
        (ids["grown"], T0, T1, "new"),
        (ids["grown"], T1, None, "grown"),
        (ids["gone"], T0, T1, "new"),
        (ids["gone"], T1, None, "disappeared"),
    ]
    assert changes[1].area_change_m2 == 5_000.0
    assert growing == [(ids["grown"], 5_000.0, pytest.approx(50.0))]


def test_summary_and_versions_per_lake(engine: sa.Engine) -> None:
    ids = _seed(engine)
    summary = queries.inventory_summary(engine, "tien-shan")
    assert summary == {
        "aoi": "tien-shan",
        "lakes": {"active": 1, "disappeared": 1},
        "versions": {"new": 2, "grown": 1, "disappeared": 1},
        "observations": 2,
        "absent_observations": 1,
        "scenes": 1,
    }
    assert queries.inventory_summary(engine, "karakoram")["lakes"] == {}
    assert queries.inventory_summary(engine)["observations"] == 2
    assert queries.versions_per_lake(engine) == {ids["grown"]: 2, ids["gone"]: 2}
