"""S5 authentication: who may connect to the local cluster, the secrets' modes, the first-start lock,
the revision check on an external database, and ``db create-user``.

The module's cluster is made by three processes starting it at once on a fresh home, as three
concurrent first runs would.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from db.engine import connect_kwargs, make_engine
from db.local_cluster import WRITER_LOGIN, LocalCluster, ensure_postgis_installed
from db.migrate import SchemaBehindError, downgrade, head, upgrade
from flows.cli import main
from tests import helpers as h
from tests.helpers import admin_sql
from tests.helpers.database import free_port

pytestmark = pytest.mark.db
ROOT = Path(__file__).resolve().parents[2]
STARTERS = 3
START = (
    "from flows.database import ready_engine\n"
    "from flows.settings import load_settings\n"
    "import sqlalchemy as sa\n"
    "with ready_engine(load_settings()).connect() as conn:\n"
    "    print(conn.execute(sa.text('SELECT current_user')).scalar_one())\n"
)


@dataclass(frozen=True)
class Started:
    home: Path
    cluster: LocalCluster
    exit_codes: list[int]
    users: list[str]
    errors: list[str]


@pytest.fixture(scope="module")
def started() -> Iterator[Started]:
    """A fresh home whose local cluster three processes started at the same moment."""
    bin_dir = ensure_postgis_installed()
    assert bin_dir.exists()
    home = Path(tempfile.mkdtemp(prefix="gl-access-"))
    home.chmod(0o755)  # the postgres user must traverse it when the suite runs as root
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("GLACIAL_LAKES_")}
    env |= {"GLACIAL_LAKES_HOME": str(home), "GLACIAL_LAKES_PG_PORT": str(port)}
    cluster = LocalCluster(home / "postgres", port)
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", START], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for _ in range(STARTERS)
        ]
        outs = [p.communicate(timeout=300) for p in procs]
        yield Started(
            home,
            cluster,
            [p.returncode for p in procs],
            [o.decode().strip() for o, _ in outs],
            [e.decode().strip().splitlines()[-1:] and e.decode().strip().splitlines()[-1] for _, e in outs],
        )
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_concurrent_first_starts_all_succeed_as_the_writer(started: Started) -> None:
    h.write_report("access", {"first_starts": STARTERS, "succeeded": started.exit_codes.count(0)})
    assert started.exit_codes == [0] * STARTERS, started.errors
    assert started.users == [WRITER_LOGIN] * STARTERS


def test_the_writer_is_no_superuser_and_cannot_change_the_schema(started: Started) -> None:
    engine = make_engine(started.cluster.writer_url(), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            flags = conn.execute(
                sa.text("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user")
            ).one()
            member = conn.execute(sa.text("SELECT pg_has_role(current_user, 'lake_writer', 'MEMBER')")).scalar_one()
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text("CREATE TABLE inventory.intruder (x int)"))
    finally:
        engine.dispose()
    assert tuple(flags) == (False, False, False) and member


def test_secrets_are_0600_in_0700_folders(started: Started) -> None:
    c = started.cluster
    files = {p: stat.S_IMODE(p.stat().st_mode) for p in (c.superuser_password_file, c.writer_password_file)}
    files[c.writer_passfile] = stat.S_IMODE(c.writer_passfile.stat().st_mode)
    folders = {p: stat.S_IMODE(p.stat().st_mode) for p in (c.secrets_dir, c.socket_dir, c.data_dir)}
    h.write_report("access", {"secret_files": len(files), "secret_folders": len(folders)})
    assert set(files.values()) == {0o600}, files
    assert set(folders.values()) == {0o700}, folders
    assert not list(c.secrets_dir.glob(".*.tmp")), "a half-written secret was left behind"


@pytest.mark.skipif(os.geteuid() != 0, reason="connecting as another OS user needs root (runuser)")
def test_another_os_user_is_refused_over_tcp_and_the_socket(started: Started) -> None:
    """S5: as ``nobody``, every attempt (superuser or writer, TCP or socket, reading a secret) fails."""
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no nobody user")
    psql = str(ensure_postgis_installed() / "psql")
    c = started.cluster
    attempts = {}
    for user in ("postgres", WRITER_LOGIN):
        for host in ("127.0.0.1", str(c.socket_dir)):
            argv = [
                psql,
                "-w",
                "-X",
                "-h",
                host,
                "-p",
                str(c.port),
                "-U",
                user,
                "-d",
                "glacial_lakes",
                "-c",
                "SELECT 1",
            ]
            attempts[f"{user}@{host}"] = argv
    for secret in (c.superuser_password_file, c.writer_password_file, c.writer_passfile):
        attempts[f"read {secret.name}"] = ["cat", str(secret)]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"}
    outcomes = {
        name: subprocess.run(
            ["runuser", "-u", "nobody", "--", *argv], cwd="/", env=env, capture_output=True, text=True, timeout=30
        )
        for name, argv in attempts.items()
    }
    accepted = sorted(name for name, done in outcomes.items() if done.returncode == 0)
    h.write_report("access", {"foreign_user_attempts": len(outcomes), "connections_accepted": len(accepted)})
    assert accepted == [], {n: outcomes[n].stdout for n in accepted}
    for name, done in outcomes.items():
        assert "password" in done.stderr or "Permission denied" in done.stderr, (name, done.stderr)


# -- an external DATABASE_URL ----------------------------------------------------------------


@pytest.fixture
def empty_db(pg_url_base: str) -> Iterator[str]:
    """URL (superuser) of a database that was never migrated."""
    name = f"test_empty_{uuid.uuid4().hex[:12]}"
    admin_sql(pg_url_base, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_url_base).set(database=name).render_as_string(hide_password=False)
    finally:
        admin_sql(pg_url_base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_an_external_database_behind_head_is_refused_until_db_upgrade(
    empty_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.database import ready_engine
    from flows.settings import load_settings

    monkeypatch.setenv("DATABASE_URL", empty_db)
    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path / "home"))
    env = {"DATABASE_URL": empty_db, "GLACIAL_LAKES_HOME": str(tmp_path / "home")}
    runner = CliRunner()
    with pytest.raises(SchemaBehindError, match="has no inventory schema: run `glacial-lakes db upgrade`"):
        ready_engine(load_settings())
    refused = runner.invoke(main, ["export", "--out", str(tmp_path / "x.geojson")], env=env)
    assert refused.exit_code == 1 and "glacial-lakes db upgrade" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and "***" in refused.output  # password masked

    upgrade(empty_db, "0001")  # partly migrated: behind
    with pytest.raises(SchemaBehindError, match=f"is at revision 0001.*behind {head()}"):
        ready_engine(load_settings())
    done = runner.invoke(main, ["db", "upgrade"], env=env)
    assert done.exit_code == 0 and f"at revision {head()}" in done.output, done.output
    assert ready_engine(load_settings()).url.database == make_url(empty_db).database
    downgrade(empty_db, "base")


# -- db create-user ----------------------------------------------------------------------------


def test_create_user_from_a_password_file_or_a_prompt(db_url: str, tmp_path: Path, pg_url_base: str) -> None:
    env = {"DATABASE_URL": db_url, "GLACIAL_LAKES_HOME": str(tmp_path / "home")}
    runner = CliRunner()
    reader, writer = f"gl_reader_{uuid.uuid4().hex[:8]}", f"gl_writer_{uuid.uuid4().hex[:8]}"
    secret = tmp_path / "pw"
    secret.write_text("a reader's long password\n")
    secret.chmod(0o600)
    try:
        made = runner.invoke(
            main, ["db", "create-user", reader, "--role", "reader", "--password-file", str(secret)], env=env
        )
        assert made.exit_code == 0 and f"login {reader} created in lake_reader" in made.output, made.output
        prompted = runner.invoke(
            main, ["db", "create-user", writer, "--role", "writer"], env=env, input="writer-password-123\n" * 2
        )
        assert prompted.exit_code == 0 and "lake_writer" in prompted.output, prompted.output
        assert "writer-password-123" not in prompted.output  # hidden prompt
        as_reader = make_url(db_url).set(username=reader, password="a reader's long password")
        with psycopg.connect(**connect_kwargs(as_reader)) as conn:
            assert conn.execute("SELECT count(*) FROM inventory.current_lakes").fetchone() == (0,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM inventory.lake")
        with psycopg.connect(**connect_kwargs(db_url)) as c:
            stored = c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (writer,)).fetchone()
        assert stored is not None and stored[0].startswith("SCRAM-SHA-256$")

        again = runner.invoke(
            main, ["db", "create-user", reader, "--role", "reader", "--password-file", str(secret)], env=env
        )
        assert again.exit_code == 0 and "updated" in again.output
        secret.chmod(0o644)
        loose = runner.invoke(
            main, ["db", "create-user", reader, "--role", "reader", "--password-file", str(secret)], env=env
        )
        assert loose.exit_code == 2 and "readable by other users" in loose.output
        for bad in ("Robert'); DROP", "pg_evil", "lake_owner", "postgres", "9lives"):
            refused = runner.invoke(
                main, ["db", "create-user", bad, "--role", "reader", "--password-file", str(secret)], env=env
            )
            assert refused.exit_code == 2 and bad in refused.output and len(refused.output.strip().splitlines()) == 1
        short = tmp_path / "short"
        short.write_text("short\n")
        short.chmod(0o600)
        weak = runner.invoke(
            main, ["db", "create-user", reader, "--role", "reader", "--password-file", str(short)], env=env
        )
        assert weak.exit_code == 2 and "at least 12" in weak.output
    finally:
        for name in (reader, writer):
            admin_sql(pg_url_base, f"DROP ROLE IF EXISTS {name}")


def test_an_owner_login_runs_the_later_migrations(empty_db: str, tmp_path: Path, pg_url_base: str) -> None:
    """After the first migration (as the superuser: extensions and roles), ``db upgrade`` runs as a lake_owner login."""
    from db.access import ensure_login, generate_password

    upgrade(empty_db, "0001")
    name, password = f"gl_owner_{uuid.uuid4().hex[:8]}", generate_password()
    with psycopg.connect(**connect_kwargs(empty_db), autocommit=True) as conn:
        ensure_login(conn, name, "lake_owner", password)
    owner_url = make_url(empty_db).set(username=name, password=password).render_as_string(hide_password=False)
    try:
        env = {"DATABASE_URL": owner_url, "GLACIAL_LAKES_HOME": str(tmp_path / "home")}
        done = CliRunner().invoke(main, ["db", "upgrade"], env=env)
        assert done.exit_code == 0 and f"at revision {head()}" in done.output, done.output
    finally:
        admin_sql(empty_db, f"DROP OWNED BY {name}")
        admin_sql(pg_url_base, f"DROP ROLE IF EXISTS {name}")
