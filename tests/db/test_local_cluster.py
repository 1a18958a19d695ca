"""The project-owned PostGIS cluster: discovery, lifecycle, clear one-line errors."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from db import local_cluster as lc
from db.local_cluster import LocalCluster, LocalClusterError, ensure_local_database, untraversable_parent
from tests.helpers.database import free_port


def _fake_install(tmp_path: Path, versions: dict[str, bool]) -> None:
    """Debian-like layout: ``lib/<v>/bin/pg_ctl`` and, when True, the extension control files."""
    for version, with_postgis in versions.items():
        bin_dir = tmp_path / "lib" / version / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "pg_ctl").touch()
        if with_postgis:
            ext = tmp_path / "share" / version / "extension"
            ext.mkdir(parents=True)
            (ext / "postgis.control").touch()
            (ext / "btree_gist.control").touch()


def test_highest_version_bin_dir_is_chosen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_install(tmp_path, {"9.6": True, "15": True, "13": True})
    monkeypatch.setattr(lc, "PG_LIB_DIR", tmp_path / "lib")
    monkeypatch.setattr(lc, "PG_SHARE_DIR", tmp_path / "share")
    assert lc.ensure_postgis_installed(allow_install=False) == tmp_path / "lib" / "15" / "bin"


def test_missing_postgis_raises_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_install(tmp_path, {"15": False})
    monkeypatch.setattr(lc, "PG_LIB_DIR", tmp_path / "lib")
    monkeypatch.setattr(lc, "PG_SHARE_DIR", tmp_path / "share")
    with pytest.raises(LocalClusterError) as info:
        lc.ensure_postgis_installed(allow_install=False)
    message = str(info.value)
    assert "postgresql-15-postgis-3" in message and "DATABASE_URL" in message
    assert "\n" not in message


def test_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cluster = LocalCluster(Path("pg"), 55555)
    assert cluster.root == tmp_path / "pg"
    assert cluster.data_dir == tmp_path / "pg" / "data" and cluster.socket_dir == tmp_path / "pg" / "run"


def test_untraversable_parent_finds_the_closed_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    locked.chmod(0o700)
    stranger = locked.stat().st_uid + 4242  # neither owner nor in the group
    assert untraversable_parent(locked / "pg" / "data", stranger, set()) == locked
    locked.chmod(0o701)
    assert untraversable_parent(locked / "pg" / "data", stranger, set()) != locked


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to the postgres user")
def test_initialise_refuses_a_root_the_postgres_user_cannot_enter() -> None:
    try:
        pwd.getpwnam(lc.SERVICE_USER)
    except KeyError:
        pytest.skip("no postgres system user")
    closed = Path(tempfile.mkdtemp(prefix="gl-closed-"))  # mode 0700, owned by root
    try:
        with pytest.raises(LocalClusterError) as info:
            LocalCluster(closed / "pg", free_port()).initialise()
        message = str(info.value)
        assert str(closed) in message and "not traversable" in message
        assert "\n" not in message
        assert not (closed / "pg" / "data" / "PG_VERSION").exists()
    finally:
        shutil.rmtree(closed, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """An initialised (not started) cluster on a free port, removed afterwards."""
    lc.ensure_postgis_installed()
    root = Path(tempfile.mkdtemp(prefix="gl-lc-"))
    root.chmod(0o755)
    made = LocalCluster(root / "pg", free_port(), ("fsync=off",))
    try:
        made.initialise()
        yield made
    finally:
        made.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.db
def test_start_stop_and_idempotence(cluster: LocalCluster) -> None:
    cluster.initialise()  # second call: a no-op on an existing cluster
    assert not cluster.is_running()
    cluster.start()
    assert cluster.is_running()
    cluster.start()  # already running: fine
    cluster.ensure_database("gl_lc")
    cluster.ensure_database("gl_lc")
    assert cluster.url("gl_lc") == f"postgresql+psycopg://postgres@127.0.0.1:{cluster.port}/gl_lc"
    password = cluster.superuser_password()
    with psycopg.connect(
        host="127.0.0.1", port=cluster.port, user="postgres", password=password, dbname="gl_lc"
    ) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SHOW unix_socket_directories").fetchone() == (str(cluster.socket_dir),)
        available = conn.execute("SELECT name FROM pg_available_extensions WHERE name IN ('postgis', 'btree_gist')")
        assert {row[0] for row in available} == {"postgis", "btree_gist"}
    assert cluster.log_path.exists()
    cluster.stop()
    assert not cluster.is_running()
    cluster.stop()  # already stopped: fine


@pytest.mark.db
def test_start_refuses_a_port_taken_by_another_server(cluster: LocalCluster) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(LocalClusterError, match=f"port {taken} .*in use") as info:
            LocalCluster(cluster.root, taken).start()
    assert "\n" not in str(info.value)
    assert not cluster.is_running()


@pytest.mark.db
def test_running_cluster_on_another_port_is_reported(cluster: LocalCluster) -> None:
    cluster.start()
    try:
        with pytest.raises(LocalClusterError, match=f"already running on port {cluster.port}"):
            LocalCluster(cluster.root, free_port()).start()
    finally:
        cluster.stop()


@pytest.mark.db
def test_ensure_local_database_returns_a_working_url(cluster: LocalCluster) -> None:
    url = ensure_local_database(cluster.root, cluster.port, "gl_demo")
    try:
        assert make_url(url)._replace(password=None).render_as_string() == cluster.url("gl_demo")
        assert make_url(url).password == cluster.superuser_password()
        assert cluster.is_running()
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("gl_demo",)
    finally:
        cluster.stop()


def _refused(**conninfo: object) -> str | None:
    """The first line of the server's refusal, or None when the connection was accepted."""
    try:
        with psycopg.connect(connect_timeout=5, **conninfo) as conn:  # type: ignore[arg-type]
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        return str(exc).strip().splitlines()[0]
    return None


@pytest.mark.db
def test_a_fresh_cluster_authenticates_and_keeps_its_secrets_private(cluster: LocalCluster) -> None:
    """S5: scram on loopback (no password / a wrong one refused), 0700 socket dir, 0600 secrets."""
    cluster.start()
    try:
        tcp = {"host": "127.0.0.1", "port": cluster.port, "user": "postgres", "dbname": "postgres"}
        refusals = [_refused(**tcp), _refused(**tcp, password="not-the-password")]
        accepted = _refused(**tcp, password=cluster.superuser_password()) is None
        hba = [line.split() for line in (cluster.data_dir / "pg_hba.conf").read_text().splitlines()]
        methods = {tuple(f[:2]): f[-1] for f in hba if f and not f[0].startswith("#")}
    finally:
        cluster.stop()
    assert all(r is not None and "password" in r for r in refusals), refusals
    assert accepted
    assert methods == {
        ("local", "all"): "peer",
        ("host", "all"): "scram-sha-256",
    }, methods
    assert stat.S_IMODE(cluster.socket_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(cluster.secrets_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(cluster.superuser_password_file.stat().st_mode) == 0o600
    assert not list(cluster.socket_dir.glob(".initdb-pwfile*")), "the initdb password file was left behind"
    assert cluster.superuser_password() not in cluster.log_path.read_text(errors="replace")


@pytest.mark.db
def test_a_trust_cluster_from_an_older_version_is_converted() -> None:
    """A cluster initialised with --auth=trust (no password file) gets a password and scram on its next start."""
    root = Path(tempfile.mkdtemp(prefix="gl-legacy-"))
    root.chmod(0o755)
    old = LocalCluster(root / "pg", free_port(), ("fsync=off",))
    try:
        old._prepare_dirs()
        old._run("initdb", f"--pgdata={old.data_dir}", "--username=postgres", "--auth=trust", "--locale=C.UTF-8")
        tcp = {"host": "127.0.0.1", "port": old.port, "user": "postgres", "dbname": "postgres"}
        old.start()
        assert _refused(**tcp) is None  # trust: anyone is the superuser
        url = ensure_local_database(old.root, old.port, "gl_legacy")
        after = _refused(**tcp)
        assert after is not None and "password" in after
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            row = conn.execute("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'postgres'")
            assert row.fetchone() == (True,)
        assert stat.S_IMODE(old.superuser_password_file.stat().st_mode) == 0o600
    finally:
        old.stop()
        shutil.rmtree(root, ignore_errors=True)
