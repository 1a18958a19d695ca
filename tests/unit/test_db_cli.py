"""``glacial-lakes db start|status|url|stop``: the local cluster's lifecycle from the CLI."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from db.local_cluster import ensure_postgis_installed
from flows.cli import main
from tests.helpers.database import free_port


@pytest.mark.db
def test_db_start_status_url_stop_round_trip() -> None:
    """Start makes a reachable database, status reports it, url connects, stop stops it (each idempotent)."""
    ensure_postgis_installed()
    home = Path(tempfile.mkdtemp(prefix="gl-cli-"))
    home.chmod(0o755)  # the postgres user must enter it when the suite runs as root
    port = free_port()
    env = {"GLACIAL_LAKES_HOME": str(home), "GLACIAL_LAKES_PG_PORT": str(port), "DATABASE_URL": None}
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(main, ["db", *args], env=env)
        assert result.exit_code == 0, result.output
        return result.output.strip()

    try:
        assert "not running" in cli("status")
        assert f"127.0.0.1:{port}" in cli("start")
        assert f"running on 127.0.0.1:{port}" in cli("status")
        cli("start")  # already running: fine
        url = cli("url")
        # The writer login, never the superuser; the password stays in its passfile.
        passfile = home / "postgres" / "secrets" / "writer.pgpass"
        assert url == f"postgresql://glacial_lakes_writer@127.0.0.1:{port}/glacial_lakes?passfile={passfile}"
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.execute(
                "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone() == (
                "glacial_lakes_writer",
                False,
            )
        shown = cli("url", "--show-password")
        password = (home / "postgres" / "secrets" / "writer.password").read_text().strip()
        assert shown == f"postgresql://glacial_lakes_writer:{password}@127.0.0.1:{port}/glacial_lakes"
        assert password not in url and password not in cli("start") and password not in cli("status")
        secret = home / "alice.pw"
        secret.write_text("alice's own password\n")
        secret.chmod(0o600)
        assert cli("create-user", "alice", "--role", "reader", "--password-file", str(secret)) == (
            "login alice created in lake_reader"
        )
        as_alice = {"host": "127.0.0.1", "port": port, "dbname": "glacial_lakes", "user": "alice"}
        with psycopg.connect(**as_alice, password="alice's own password") as conn:
            assert conn.execute("SELECT count(*) FROM inventory.current_lakes").fetchone() == (0,)
        assert cli("stop") == "local PostGIS stopped"
        assert "not running" in cli("status")
        assert cli("stop") == "local PostGIS was not running"
    finally:
        runner.invoke(main, ["db", "stop"], env=env)
        shutil.rmtree(home, ignore_errors=True)


def test_db_status_with_database_url_starts_nothing(tmp_path: Path) -> None:
    """With DATABASE_URL the local cluster is not touched (nothing created under the home)."""
    env = {"GLACIAL_LAKES_HOME": str(tmp_path / "home"), "DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}
    result = CliRunner().invoke(main, ["db", "status"], env=env)
    assert result.exit_code == 0 and "DATABASE_URL is set" in result.output
    assert not (tmp_path / "home" / "postgres").exists()


def test_bad_setting_is_exit_2_naming_the_variable(tmp_path: Path) -> None:
    """A malformed environment value names the variable and the reason, on one line."""
    env = {"GLACIAL_LAKES_HOME": str(tmp_path / "home"), "GLACIAL_LAKES_PG_PORT": "port"}
    result = CliRunner().invoke(main, ["db", "status"], env=env)
    line = result.output.strip()
    assert result.exit_code == 2, result.output
    assert "GLACIAL_LAKES_PG_PORT='port'" in line and "integer" in line and len(line.splitlines()) == 1
