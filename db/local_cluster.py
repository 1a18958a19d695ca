"""A private PostgreSQL + PostGIS cluster owned by the project (demo, tests, single host).

The cluster lives under one root directory (``data/``, ``run/`` for the Unix socket,
``log/postgres.log``), listens on 127.0.0.1 only, on a private port (never the system
cluster's 5432), with ``trust`` authentication: any local user can connect as ``postgres``,
so use it for development and tests, not for a shared production server (set ``DATABASE_URL``).

PostgreSQL refuses to run as root: when the current user is root, the server binaries run as
the ``postgres`` system user and the cluster directories are handed to it; that user must be
able to traverse every parent of the root directory.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Debian layout; module-level so tests can point them at an empty directory.
PG_LIB_DIR = Path("/usr/lib/postgresql")
PG_SHARE_DIR = Path("/usr/share/postgresql")
POSTGIS_PACKAGE = "postgresql-15-postgis-3"
SERVICE_USER = "postgres"
DEFAULT_PORT = 55432
DEFAULT_DBNAME = "glacial_lakes"


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
        for directory, mode in ((self.data_dir, 0o700), (self.socket_dir, 0o755), (self.log_path.parent, 0o755)):
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

    def initialise(self) -> None:
        """Create the cluster (``initdb``) unless ``data_dir`` already holds one."""
        self._prepare_dirs()
        if (self.data_dir / "PG_VERSION").exists():
            return
        # Long options, one per argument: readable without a formatter exception.
        self._run(
            "initdb",
            f"--pgdata={self.data_dir}",
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        )

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
        """SQLAlchemy URL (psycopg 3 driver) of ``dbname`` on this cluster, over TCP."""
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{dbname}"

    def ensure_database(self, dbname: str = DEFAULT_DBNAME) -> None:
        """Create ``dbname`` on the running cluster if it does not exist."""
        import psycopg
        from psycopg import sql

        conninfo = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
                if exists is None:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        except psycopg.errors.DuplicateDatabase:
            pass  # created concurrently by another process: that is what we wanted
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LocalClusterError(f"cannot connect to 127.0.0.1:{self.port}: {first}") from exc


def ensure_local_database(root: Path, port: int = DEFAULT_PORT, dbname: str = DEFAULT_DBNAME) -> str:
    """Install PostGIS if needed, create and start the cluster under ``root``, create ``dbname``.

    Returns:
        The database URL (``postgresql+psycopg://postgres@127.0.0.1:PORT/DBNAME``).
    """
    ensure_postgis_installed()
    cluster = LocalCluster(Path(root), port)
    cluster.initialise()
    cluster.start()
    cluster.ensure_database(dbname)
    return cluster.url(dbname)
