"""Suite-wide fixtures: a PostGIS server, a migrated template database, one clone per test.

Set ``TEST_DATABASE_URL`` (any database on the server; the user needs CREATEDB and
CREATEROLE) to use an existing server; otherwise a private cluster is started on a free
port under a temporary directory and removed at the end of the session. That cluster is made
the way the product makes its own (scram on loopback, a 0700 socket directory, a generated
superuser password in a 0600 file): the fixtures' URLs carry the password.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

# Before prefect is imported anywhere: a busy 2-core machine needs a longer start-up budget.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
# Most tests run flows in a home of their own: one shared folder of exported ONNX graphs, so the
# TerraMind models are exported once per session, not once per test (tests of the cache set their own).
os.environ.setdefault(
    "GLACIAL_LAKES_ONNX_CACHE", os.path.join(tempfile.gettempdir(), f"glacial-lakes-tests-onnx-{os.getuid()}")
)

from db.engine import make_engine, normalise_url
from db.local_cluster import LocalCluster, ensure_postgis_installed
from db.migrate import upgrade
from tests.helpers import admin_sql as _admin
from tests.helpers import realdata as _realdata
from tests.helpers.database import free_port

TEMPLATE_DB = "gl_template"
# Durability is irrelevant for throw-away test data; these make CREATE DATABASE and
# commits several times faster on a small machine.
TEST_SERVER_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


# ---------------------------------------------------------------------------------------
# Database: server, template, per-test clone
# ---------------------------------------------------------------------------------------


def database_url(base: str, dbname: str) -> str:
    """``base`` with its database replaced by ``dbname`` (password kept)."""
    return normalise_url(base).set(database=dbname).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def prefect_backend() -> Iterator[None]:
    """One temporary Prefect server for every in-process flow of the session (start-up ~13 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The real sample data folder (``tests.helpers.realdata``): skipped when missing, a failure under CI."""
    return _realdata.require()


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster | None]:
    """The private cluster the suite started, or None when ``TEST_DATABASE_URL`` is set.

    Fault tests use it to restart or crash the server (``pg_ctl`` on ``data_dir``).
    """
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    ensure_postgis_installed()
    root = Path(tempfile.mkdtemp(prefix="gl-pg-"))
    root.chmod(0o755)  # mkdtemp makes it 0700; the postgres user must enter it when we are root
    cluster = LocalCluster(root, free_port(), TEST_SERVER_SETTINGS)
    try:
        cluster.initialise()
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url_base(local_cluster: LocalCluster | None) -> str:
    """URL of the server's maintenance database (``postgres``), psycopg 3 driver."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        return normalise_url(external).render_as_string(hide_password=False)
    assert local_cluster is not None
    return local_cluster.admin_url("postgres")


@pytest.fixture(scope="session")
def template_db(pg_url_base: str) -> str:
    """URL of ``gl_template``, created afresh and migrated to head once per session.

    Nothing may stay connected to it: ``CREATE DATABASE ... TEMPLATE`` needs it idle.
    """
    _admin(pg_url_base, f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
    _admin(pg_url_base, f'CREATE DATABASE "{TEMPLATE_DB}"')
    url = database_url(pg_url_base, TEMPLATE_DB)
    upgrade(url, "head")
    return url


@pytest.fixture
def db_url(pg_url_base: str, template_db: str) -> Iterator[str]:
    """URL of a fresh database cloned from the migrated template, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    _admin(pg_url_base, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    try:
        yield database_url(pg_url_base, name)
    finally:
        _admin(pg_url_base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """Engine on the test's database, disposed before the database is dropped."""
    eng = make_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


# ---------------------------------------------------------------------------------------
# Prefect (session harness) — added separately; keep it below this line.
# ---------------------------------------------------------------------------------------
