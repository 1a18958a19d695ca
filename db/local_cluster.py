"""A private PostgreSQL + PostGIS cluster owned by the project (demo, tests, single host).

The cluster lives under one root directory (``data/``, ``run/`` for the Unix socket,
``log/postgres.log``, ``secrets/``), listens on 127.0.0.1 only, on a private port (never the
system cluster's 5432). Authentication: ``scram-sha-256`` over TCP, ``peer`` on the Unix socket,
whose directory is 0700 (only the server's OS user can reach it). The superuser ``postgres``
has a generated password in ``secrets/postgres.password`` (0600, folder 0700, owned by the user
who created the cluster); it is used only to create the cluster and the database and to run
migrations. Everything else connects as the ``glacial_lakes_writer`` login (member of
``lake_writer``), whose password is in ``secrets/writer.password`` and, for ``psql``, in the libpq
passfile ``secrets/writer.pgpass``. A cluster made by an older version with ``trust`` is
converted on its next start. The first start is serialised by an ``flock`` on
``first-start.lock`` so concurrent first starts on a fresh home all succeed.

PostgreSQL refuses to run as root: when the current user is root, the server binaries run as
the ``postgres`` system user and the cluster directories are handed to it; that user must be
able to traverse every parent of the root directory.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from db import access

# Debian layout; module-level so tests can point them at an empty directory.
PG_LIB_DIR = Path("/usr/lib/postgresql")
PG_SHARE_DIR = Path("/usr/share/postgresql")
POSTGIS_PACKAGE = "postgresql-15-postgis-3"
SERVICE_USER = "postgres"
DEFAULT_PORT = 55432
DEFAULT_DBNAME = "glacial_lakes"
SUPERUSER = "postgres"
WRITER_LOGIN = "glacial_lakes_writer"
"""The login flows and queries use on the local cluster (member of ``lake_writer``)."""
HBA_CONF = (
    "# Written by glacial-lakes: peer on the 0700 socket directory, scram-sha-256 on loopback.\n"
    "local all all peer\n"
    "host all all 127.0.0.1/32 scram-sha-256\n"
    "host all all ::1/128 scram-sha-256\n"
)


class LocalClusterError(RuntimeError):
    """The local cluster cannot be installed, created or started (one-line reason)."""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in path.parent.name.split(".") if p.isdigit())


def _find_bin_dir() -> Path | None:
    """Highest-version ``<lib>/<major>/bin`` holding ``pg_ctl``, or None."""
    candidates = [p for p in PG_LIB_DIR.glob("*/bin") if (p / "pg_ctl").exists()]
    return max(candidates, key=_version_key) if candidates else None


def _postgis_available(bin_dir: Path) -> bool:
    major = bin_dir.parent.name
    ext = PG_SHARE_DIR / major / "extension"
    return (ext / "postgis.control").exists() and (ext / "btree_gist.control").exists()


def ensure_postgis_installed(*, allow_install: bool = True) -> Path:
    """Return the PostgreSQL bin directory, installing PostGIS from Debian if it is missing.

    Args:
        allow_install: when True and running as root with ``apt-get``, install
            ``postgresql-15-postgis-3`` (progress goes to stderr).

    Returns:
        The bin directory of the highest installed PostgreSQL major version.

    Raises:
        LocalClusterError: PostGIS is missing and cannot be installed here.
    """
    bin_dir = _find_bin_dir()
    if bin_dir is not None and _postgis_available(bin_dir):
        return bin_dir
    apt = shutil.which("apt-get")
    if not allow_install:
        raise LocalClusterError(f"PostGIS is not installed: install {POSTGIS_PACKAGE} or set DATABASE_URL")
    if apt is None:
        raise LocalClusterError(
            f"PostGIS is not installed and apt-get is not available: install {POSTGIS_PACKAGE} or set DATABASE_URL"
        )
    if os.geteuid() != 0:
        raise LocalClusterError(
            f"PostGIS is not installed and installing it needs root: install {POSTGIS_PACKAGE} or set DATABASE_URL"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in ([apt, "update"], [apt, "install", "-y", "--no-install-recommends", POSTGIS_PACKAGE]):
        print(f"glacial-lakes: running {' '.join(argv)}", file=sys.stderr, flush=True)
        done = subprocess.run(argv, env=env, stdout=sys.stderr, stderr=sys.stderr, check=False)
        if done.returncode != 0:
            raise LocalClusterError(f"{' '.join(argv)} failed with status {done.returncode}")
    bin_dir = _find_bin_dir()
    if bin_dir is None or not _postgis_available(bin_dir):
        raise LocalClusterError(f"{POSTGIS_PACKAGE} was installed but PostGIS is still not found under {PG_LIB_DIR}")
    return bin_dir


def untraversable_parent(path: Path, uid: int, gids: set[int]) -> Path | None:
    """First directory among ``path`` and its existing parents that ``uid`` cannot enter.

    Args:
        path: directory (need not exist yet; missing components are skipped).
        uid: user id that must traverse it.
        gids: that user's group ids.

    Returns:
        The offending directory, or None when every existing component has the needed x bit.
    """
    if uid == 0:
        return None
    for directory in [path, *path.parents]:
        try:
            st = directory.stat()
        except FileNotFoundError:
            continue
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return directory
    return None


def _service_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise LocalClusterError(
            f"running as root but there is no {SERVICE_USER!r} system user to run PostgreSQL"
        ) from None


def _groups_of(account: pwd.struct_passwd) -> set[int]:
    return set(os.getgrouplist(account.pw_name, account.pw_gid))


@dataclass(frozen=True)
class LocalCluster:
    """One private cluster: ``root`` holds everything, the server listens on 127.0.0.1:``port``.

    ``settings`` are extra ``-c name=value`` server settings (tests pass ``fsync=off``).
    """

    root: Path
    port: int = DEFAULT_PORT
    settings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Absolute: the server binaries run with the cluster root as working directory.
        object.__setattr__(self, "root", Path(self.root).absolute())

    @property
    def data_dir(self) -> Path:
        """``PGDATA`` (mode 700, owned by the server's user)."""
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        """Where the server's Unix socket lives."""
        return self.root / "run"

    @property
    def log_path(self) -> Path:
        """The server log (``pg_ctl -l``)."""
        return self.root / "log" / "postgres.log"

    @property
    def secrets_dir(self) -> Path:
        """Password files (0700, owned by the user who runs the project, not the server's)."""
        return self.root / "secrets"

    @property
    def superuser_password_file(self) -> Path:
        """The ``postgres`` superuser's generated password (0600)."""
        return self.secrets_dir / "postgres.password"

    @property
    def writer_password_file(self) -> Path:
        """The writer login's generated password (0600)."""
        return self.secrets_dir / "writer.password"

    @property
    def writer_passfile(self) -> Path:
        """The libpq passfile (0600) holding the writer login's line: ``PGPASSFILE`` for psql."""
        return self.secrets_dir / "writer.pgpass"

    @property
    def lock_path(self) -> Path:
        """``flock`` target serialising first starts."""
        return self.root / "first-start.lock"

    # -- helpers ---------------------------------------------------------------------------

    @property
    def _as_service_user(self) -> bool:
        return os.geteuid() == 0

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        bin_dir = _find_bin_dir()
        if bin_dir is None:
            raise LocalClusterError(f"PostgreSQL is not installed: install {POSTGIS_PACKAGE} or set DATABASE_URL")
        argv = [str(bin_dir / tool), *args]
        if self._as_service_user:
            argv = ["runuser", "-u", SERVICE_USER, "--", *argv]
        # cwd = root: the service user may not be allowed into the caller's working directory.
        done = subprocess.run(argv, cwd=self.root, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            reason = detail[-1] if detail else f"exit status {done.returncode}"
            raise LocalClusterError(f"{tool} failed for {self.data_dir}: {reason}")
        return done

    def _prepare_dirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        owner: pwd.struct_passwd | None = None
        if self._as_service_user:
            owner = _service_account()
            blocked = untraversable_parent(self.root.resolve(), owner.pw_uid, _groups_of(owner))
            if blocked is not None:
                raise LocalClusterError(
                    f"{blocked} is not traversable by the {SERVICE_USER} user "
                    f"(mode {stat.S_IMODE(blocked.stat().st_mode):o}): put the cluster elsewhere or set DATABASE_URL"
                )
        for directory, mode in ((self.data_dir, 0o700), (self.socket_dir, 0o700), (self.log_path.parent, 0o700)):
            directory.mkdir(exist_ok=True)
            if owner is not None:
                os.chown(directory, owner.pw_uid, owner.pw_gid)
            directory.chmod(mode)

    def _running_port(self) -> int | None:
        """Port recorded in ``postmaster.pid`` (4th line), when readable."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return int(lines[3])
        except (OSError, IndexError, ValueError):
            return None

    def _port_in_use(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # Same option as the server, so sockets in TIME_WAIT do not count as "in use".
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError:
                return True
        return False

    def _last_log_line(self) -> str:
        try:
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            lines = []
        return f"{lines[-1].strip()} (log: {self.log_path})" if lines else f"see {self.log_path}"

    # -- lifecycle -------------------------------------------------------------------------

    @contextmanager
    def first_start_lock(self) -> Iterator[None]:
        """Hold an exclusive ``flock`` on :attr:`lock_path` (blocks until other starters finish)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def superuser_password(self) -> str:
        """The generated superuser password (read from its 0600 file)."""
        return access.read_secret(self.superuser_password_file)

    def initialise(self) -> None:
        """Create the cluster (``initdb``) unless ``data_dir`` already holds one; write ``pg_hba.conf``.

        A fresh cluster gets a generated superuser password (``initdb --pwfile``, the file in the
        socket directory only the server's user can enter, removed right after).
        """
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            if not self.superuser_password_file.exists():
                access.write_secret(self.superuser_password_file, access.generate_password() + "\n")
            pwfile = self.socket_dir / ".initdb-pwfile"
            access.write_secret(pwfile, self.superuser_password())
            if self._as_service_user:
                account = _service_account()
                os.chown(pwfile, account.pw_uid, account.pw_gid)
                os.chown(self.socket_dir, account.pw_uid, account.pw_gid)
            try:
                # Long options, one per argument: readable without a formatter exception.
                self._run(
                    "initdb",
                    f"--pgdata={self.data_dir}",
                    f"--username={SUPERUSER}",
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=peer",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                )
            finally:
                pwfile.unlink(missing_ok=True)
        self._write_hba()

    def _write_hba(self) -> None:
        """Replace ``pg_hba.conf`` with :data:`HBA_CONF` (owned by the server's user, 0600)."""
        hba = self.data_dir / "pg_hba.conf"
        try:
            if hba.read_text() == HBA_CONF:
                return
        except OSError:
            pass
        hba.write_text(HBA_CONF)
        if self._as_service_user:
            account = _service_account()
            os.chown(hba, account.pw_uid, account.pw_gid)
        hba.chmod(0o600)
        if self.is_running():
            self._run("pg_ctl", "reload", "-D", str(self.data_dir))

    def _convert_trust_cluster(self) -> None:
        """Give ``postgres`` of a ``trust`` cluster (no password file) a generated password.

        Runs while the old ``pg_hba.conf`` still admits it; :meth:`initialise` then replaces it.
        """
        import psycopg
        from psycopg import sql

        password = access.generate_password()
        verifier = sql.Literal(access.scram_verifier(password))
        conninfo = f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(SUPERUSER), verifier))
        access.write_secret(self.superuser_password_file, password + "\n")

    def is_running(self) -> bool:
        """True when a server is running on ``data_dir``."""
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def start(self) -> None:
        """Start the server and wait until it accepts connections; a running one is left alone.

        Raises:
            LocalClusterError: not initialised, the port is taken by another server, or the
                server failed to start (the message names the log file).
        """
        if not (self.data_dir / "PG_VERSION").exists():
            raise LocalClusterError(f"no cluster in {self.data_dir}: call initialise() first")
        if self.is_running():
            running = self._running_port()
            if running is not None and running != self.port:
                raise LocalClusterError(
                    f"the cluster in {self.data_dir} is already running on port {running}, not {self.port}"
                )
            return
        if self._port_in_use():
            raise LocalClusterError(
                f"port {self.port} on 127.0.0.1 is in use by another server: choose another port or set DATABASE_URL"
            )
        options = [f"-p {self.port}", f"-k {shlex.quote(str(self.socket_dir))}", "-c listen_addresses=127.0.0.1"]
        options += [f"-c {shlex.quote(setting)}" for setting in self.settings]
        done = self._run(
            "pg_ctl",
            "start",
            "--wait",
            "--timeout=60",
            f"--pgdata={self.data_dir}",
            f"--log={self.log_path}",
            f"--options={' '.join(options)}",
            check=False,
        )
        if done.returncode != 0:
            raise LocalClusterError(f"PostgreSQL did not start on port {self.port}: {self._last_log_line()}")

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are rolled back); no-op when stopped."""
        if self.is_running():
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data_dir))

    def url(self, dbname: str = DEFAULT_DBNAME, user: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver) of ``dbname`` on this cluster, over TCP, no password."""
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{dbname}"

    def admin_url(self, dbname: str = DEFAULT_DBNAME) -> str:
        """The superuser's URL with its password (keep it in memory: never print or log it)."""
        return f"postgresql+psycopg://{SUPERUSER}:{self.superuser_password()}@127.0.0.1:{self.port}/{dbname}"

    def writer_url(self, dbname: str = DEFAULT_DBNAME, *, with_password: bool = True) -> str:
        """The writer login's URL: with its password, or naming the passfile (what ``psql`` takes)."""
        if with_password:
            password = access.read_secret(self.writer_password_file)
            return f"postgresql+psycopg://{WRITER_LOGIN}:{password}@127.0.0.1:{self.port}/{dbname}"
        return f"{self.url(dbname, WRITER_LOGIN)}?passfile={quote(str(self.writer_passfile), safe='/')}"

    def ensure_writer(self) -> None:
        """Create the writer login (member of ``lake_writer``, which the migrations create) if missing.

        Its password is generated once into :attr:`writer_password_file` and the passfile.
        """
        import psycopg

        from db.schema import WRITER_ROLE

        fresh = not self.writer_password_file.exists()
        if fresh:
            password = access.generate_password()
            access.write_secret(self.writer_password_file, password + "\n")
        password = access.read_secret(self.writer_password_file)
        access.write_secret(self.writer_passfile, access.pgpass_line("127.0.0.1", self.port, WRITER_LOGIN, password))
        with psycopg.connect(
            self._conninfo("postgres"), password=self.superuser_password(), autocommit=True, connect_timeout=10
        ) as conn:
            access.ensure_login(conn, WRITER_LOGIN, WRITER_ROLE, password, reset_password=fresh)

    def _conninfo(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={dbname}"

    def ensure_database(self, dbname: str = DEFAULT_DBNAME) -> None:
        """Create ``dbname`` on the running cluster if it does not exist."""
        import psycopg
        from psycopg import sql

        try:
            with psycopg.connect(
                self._conninfo("postgres"), password=self.superuser_password(), autocommit=True, connect_timeout=10
            ) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
                if exists is None:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        except psycopg.errors.DuplicateDatabase:
            pass  # created concurrently by another process: that is what we wanted
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LocalClusterError(f"cannot connect to 127.0.0.1:{self.port}: {first}") from exc


def ensure_local_database(
    root: Path, port: int = DEFAULT_PORT, dbname: str = DEFAULT_DBNAME, *, migrate: bool = False
) -> str:
    """Install PostGIS if needed, create and start the cluster under ``root``, create ``dbname``.

    Holds the cluster's first-start lock throughout, so concurrent callers on a fresh root all
    succeed. With ``migrate``, also upgrade ``dbname`` to the newest schema as the superuser and
    create the writer login.

    Returns:
        The superuser's URL of ``dbname``, password included (never print it).
    """
    ensure_postgis_installed()
    cluster = LocalCluster(Path(root), port)
    with cluster.first_start_lock():
        legacy = (cluster.data_dir / "PG_VERSION").exists() and not cluster.superuser_password_file.exists()
        if legacy:  # made with trust by an older version: convert it, then tighten pg_hba.conf
            cluster._prepare_dirs()
            cluster.start()
            cluster._convert_trust_cluster()
        cluster.initialise()
        cluster.start()
        cluster.ensure_database(dbname)
        url = cluster.admin_url(dbname)
        if migrate:
            from db.migrate import upgrade

            upgrade(url)
            cluster.ensure_writer()
    return url
