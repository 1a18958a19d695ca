"""A run's temporary Prefect API server, tied to the run's life: no orphan, even after ``kill -9``.

Without a configured API, Prefect starts a temporary server itself (a uvicorn child of the flow
process) and stops it from an ``atexit`` hook, which ``kill -9`` skips: every killed run left a
server (~200 MB) running for ever. The CLI therefore starts that server itself,
``prefect server start --no-services --no-ui`` on a free loopback port with Prefect's own
database under the Prefect home (what Prefect's temporary server uses), and points the run at it:

- On Linux the server asks the kernel to send it SIGTERM when the run dies, whatever killed the
  run (``prctl(PR_SET_PDEATHSIG)``, set by a small launcher before it execs Prefect).
- Everywhere, a record in ``<Prefect home>/temporary-servers/`` (files 0600 in a 0700 folder)
  names the server and the run that owns it; every start first stops each recorded server whose
  run is gone (a platform without that kernel call, a server stuck in its shutdown).
  Processes are named by pid *and* start time, so a pid the system has reused is never signalled,
  and a server whose run is still alive (two runs at once under one home) is left alone.

A Prefect API the user configured (``PREFECT_API_URL``, a Prefect profile, ``prefect.toml``) is
theirs: nothing is started or stopped then.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "RECORD_DIR",
    "PrefectApi",
    "PrefectServerError",
    "ProcessId",
    "ServerRecord",
    "configured_api_url",
    "prefect_api",
    "process_id",
    "reap_stale_servers",
    "start_server",
]

RECORD_DIR = "temporary-servers"
"""Folder of the records under the Prefect home."""
HOST = "127.0.0.1"
"""The server listens on loopback only: its API takes writes from anyone who can reach it."""
STOP_GRACE_S = 5.0
"""SIGTERM first (the server closes its database), SIGKILL after this many seconds."""
PORT_ATTEMPTS = 3
"""Starts tried when another process takes the chosen port before the server binds it."""
PR_SET_PDEATHSIG = 1
"""``<sys/prctl.h>``: the signal this process gets when its parent thread dies."""

# Runs in the server's process before Prefect does: ask for SIGTERM at the parent's death, leave
# if the parent is already gone (it died before the request), then become Prefect (same pid).
_LAUNCHER = """\
import ctypes, os, signal, sys
if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0) != 0:
    sys.exit(f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}")
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)
os.execv(sys.executable, [sys.executable, "-m", "prefect", *sys.argv[2:]])
"""

Notify = Callable[[str], None]
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b.*:")
_ERROR_LINE = re.compile(r"^ERROR\b")


class PrefectServerError(RuntimeError):
    """The temporary Prefect server did not start (an environment failure, not bad input)."""


@dataclass(frozen=True)
class ProcessId:
    """A process named so that a reused pid never matches: its pid and its start time.

    ``started`` is the kernel's start time in clock ticks since boot (``/proc/PID/stat``), or
    ``ps``'s ``lstart`` text where there is no ``/proc``; only compared for equality.
    """

    pid: int
    started: str


def _from_proc(pid: int) -> ProcessId | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command name: state is field 3 of stat(5), starttime field 22.
    return None if fields[0] in ("Z", "X") else ProcessId(pid, fields[19])


def _from_ps(pid: int) -> ProcessId | None:
    done = subprocess.run(["ps", "-o", "stat=", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True)
    parts = done.stdout.strip().split(None, 1)
    if done.returncode != 0 or len(parts) != 2 or parts[0].startswith("Z"):
        return None
    return ProcessId(pid, parts[1])


def process_id(pid: int) -> ProcessId | None:
    """``pid`` with its start time while it runs; None once it is gone (a zombie counts as gone)."""
    return _from_proc(pid) if Path("/proc/self/stat").exists() else _from_ps(pid)


@dataclass(frozen=True)
class ServerRecord:
    """One temporary server: its process, the run process that owns it, and its port."""

    server: ProcessId
    owner: ProcessId
    port: int

    def write(self, folder: Path) -> Path:
        """``folder/<owner pid>.json``, mode 0600, replaced atomically (a reader never sees half)."""
        path = folder / f"{self.owner.pid}.json"
        partial = path.with_suffix(".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"server": vars(self.server), "owner": vars(self.owner), "port": self.port}, out)
        partial.replace(path)
        return path

    @classmethod
    def read(cls, path: Path) -> ServerRecord | None:
        """The record in ``path``; None if it is gone or unreadable (it then names nothing to stop)."""
        try:
            doc = json.loads(path.read_text())
            return cls(ProcessId(**doc["server"]), ProcessId(**doc["owner"]), int(doc["port"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _stop(pid: int, grace_s: float) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; returns once the process is gone (not our child)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if process_id(pid) is None:
                return
            time.sleep(0.05)


def reap_stale_servers(folder: Path, grace_s: float = STOP_GRACE_S) -> list[ServerRecord]:
    """Stop every server recorded in ``folder`` whose owning run is gone; drop stale records.

    A server is signalled only if it is still the recorded process (same pid and start time);
    a record whose run is alive is left as it is. Returns the records of the servers stopped.
    """
    stopped: list[ServerRecord] = []
    for path in sorted(folder.glob("*.json")):
        record = ServerRecord.read(path)
        if record is not None and process_id(record.owner.pid) == record.owner:
            continue  # its run is alive: its server is in use
        if record is not None and process_id(record.server.pid) == record.server:
            _stop(record.server.pid, grace_s)
            stopped.append(record)
        path.unlink(missing_ok=True)
        path.with_suffix(".log").unlink(missing_ok=True)
    return stopped


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Loopback is never behind the user's HTTP proxy (``http_proxy`` would otherwise apply)."""


def _healthy(port: int) -> bool:
    try:
        with _DIRECT.open(f"http://{HOST}:{port}/api/health", timeout=2) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


class PrefectApi:
    """One temporary server: launched, waited for, stopped (``process`` is None once stopped).

    ``folder`` holds its record and log; ``env`` is its environment; ``timeout_s`` bounds its start
    (seconds); ``die_with_parent`` launches it with the Linux death signal. ``services``: with
    Prefect's services (the scheduler: schedules fire) and its UI, for ``glacial-lakes serve``;
    a run's temporary server needs neither. ``port``: a fixed port (0: a free one).
    """

    def __init__(
        self,
        folder: Path,
        env: dict[str, str],
        timeout_s: float,
        die_with_parent: bool,
        *,
        services: bool = False,
        port: int = 0,
    ) -> None:
        self.folder, self._env, self.timeout_s, self.die_with_parent = folder, env, timeout_s, die_with_parent
        self.services, self.fixed_port = services, port
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.ready = False

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/api``, what ``PREFECT_API_URL`` is set to."""
        return f"http://{HOST}:{self.port}/api"

    @property
    def log_path(self) -> Path:
        """The server's output (kept when it fails to start)."""
        return self.folder / f"{os.getpid()}.log"

    def launch(self) -> None:
        """Start the server process on a free port and record it; returns at once (see :meth:`wait_ready`)."""
        self.port = self.fixed_port or _free_port()
        argv = ["server", "start", "--host", HOST, "--port", str(self.port)]
        argv += [] if self.services else ["--no-services", "--no-ui"]
        argv += ["--log-level", "ERROR"]
        if self.die_with_parent:
            command = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *argv]
        else:
            command = [sys.executable, "-m", "prefect", *argv]
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as log:
            # Its own session: Ctrl-C reaches the run, which stops the server once the flow has
            # reported, instead of the server dying under a flow that is still finishing.
            self.process = subprocess.Popen(
                command,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server, owner = process_id(self.process.pid), process_id(os.getpid())
        if server is not None and owner is not None:  # None: it exited at once; wait_ready says why
            ServerRecord(server, owner, self.port).write(self.folder)

    def wait_ready(self) -> None:
        """Block until the server answers its health check (no-op for the user's API).

        Raises:
            PrefectServerError: the server exited or did not answer within ``timeout_s``; the
                message names the log file and quotes its last line.
        """
        if self.process is None or self.ready:
            return
        deadline = time.monotonic() + self.timeout_s
        attempts = 1
        # Ours must be the one that answers: a foreign server may hold the port if ours lost the race.
        while (code := self.process.poll()) is not None or not _healthy(self.port):
            if code is not None and attempts < PORT_ATTEMPTS and not _port_free(self.port):
                attempts += 1  # another process took the port between our probe and the bind
                self.launch()
                continue
            if code is not None or time.monotonic() > deadline:
                self.stop()
                what = f"exited with status {code}" if code is not None else f"did not answer in {self.timeout_s:g} s"
                raise PrefectServerError(
                    f"temporary Prefect server on {HOST}:{self.port} {what} (log {self.log_path}): {self._last_line()}"
                )
            time.sleep(0.1)
        self.ready = True

    def _last_line(self) -> str:
        """The log's last exception line (``…Error: why``), else its last ``ERROR`` line, else its last line."""
        try:
            lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            lines = []
        for pattern in (_EXCEPTION_LINE, _ERROR_LINE):
            found = [line for line in lines if pattern.match(line)]
            if found:
                return found[-1]
        return lines[-1] if lines else "no output"

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after :data:`STOP_GRACE_S`) and remove its record."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        (self.folder / f"{os.getpid()}.json").unlink(missing_ok=True)
        if self.ready:  # a failed start keeps its log for the error message to point at
            self.log_path.unlink(missing_ok=True)
        self.process = None


def _records(prefect_home: Path) -> Path:
    folder = prefect_home / RECORD_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)  # mkdir's mode passes through the umask
    return folder


def start_server(
    prefect_home: Path, timeout_s: float, *, die_with_parent: bool = True, services: bool = False, port: int = 0
) -> PrefectApi:
    """Launch a temporary server for ``prefect_home``'s database and record it (not yet waited for).

    ``die_with_parent``: on Linux, the server gets SIGTERM when the calling *thread* ends (the
    kernel's rule), so call this from the main thread. False, and every other platform, leaves
    only the record for the next start to find. ``services`` and ``port``: see :class:`PrefectApi`.
    """
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(prefect_home)  # its database where its record is, whatever set the home
    linux = sys.platform.startswith("linux")
    api = PrefectApi(_records(prefect_home), env, timeout_s, die_with_parent and linux, services=services, port=port)
    api.launch()
    return api


def configured_api_url() -> str | None:
    """The Prefect API URL the user configured (environment, profile or ``prefect.toml``), as Prefect resolves it."""
    from prefect.settings import get_current_settings

    url = os.environ.get("PREFECT_API_URL") or get_current_settings().api.url
    return str(url) if url else None


def _early_home() -> Path | None:
    """The Prefect home to launch a server for before Prefect is imported; None: wait for Prefect.

    Only when Prefect is not imported yet (an imported Prefect may run under other settings, e.g.
    ``temporary_settings``), no ``PREFECT_API_URL`` is set and ``PREFECT_HOME`` is (the CLI sets
    it): a guess that :func:`prefect_api` checks against Prefect's own settings once imported.
    """
    if "prefect.settings" in sys.modules or os.environ.get("PREFECT_API_URL"):
        return None
    home = os.environ.get("PREFECT_HOME")
    return Path(home).expanduser() if home else None


@contextmanager
def prefect_api(notify: Notify, *, services: bool = False, port: int = 0) -> Iterator[Callable[[], None]]:
    """The Prefect API for this process's flows: the user's if configured, else a temporary server.

    Yields ``ready``: call it before the first flow (the server starts meanwhile). From then
    until the block ends ``PREFECT_API_URL`` points this process (and its children) at the
    server; at the end the server is stopped. Enter on the main thread (the death signal's rule),
    after every input check (a bad input must not cost a server start). ``notify`` hears of each
    stale server stopped. ``services`` and ``port``: see :class:`PrefectApi` (``serve`` asks for
    the scheduler, so schedules fire).

    Start-up: importing Prefect takes seconds, and so does the server's own start (mostly its
    imports). When Prefect is not imported yet the server is launched first, for the home the
    environment names, and Prefect is imported while it starts; once imported, Prefect's own
    settings decide: a configured API stops that server unused, another home relaunches it there.

    Raises:
        PrefectServerError: from ``ready``, when the server does not start.
    """
    early: PrefectApi | None = None
    stale: list[ServerRecord] = []
    home = _early_home()
    if home is not None:
        stale = reap_stale_servers(_records(home))
        # The timeout is Prefect's setting, read below once Prefect is imported.
        early = start_server(home, 0.0, services=services, port=port)
    try:
        import prefect.context
        from prefect.settings import get_current_settings, temporary_settings

        current = get_current_settings()
        user_api = configured_api_url()
    except BaseException:
        if early is not None:
            early.stop()
        raise
    if early is not None and home is not None and (user_api or Path(current.home).resolve() != home.resolve()):
        early.stop()  # the guess was wrong: never used, no record left
        early.log_path.unlink(missing_ok=True)  # nor its log (kept only to explain a failed start)
        early = None
    if user_api:
        yield lambda: None  # the user's API (environment, profile or prefect.toml): theirs
        return
    if early is None:
        stale += reap_stale_servers(_records(current.home))
    for record in stale:
        notify(f"stopped a temporary Prefect server (pid {record.server.pid}) left by a killed run")
    timeout_s = float(current.server.ephemeral.startup_timeout_seconds)
    api = early or start_server(current.home, timeout_s, services=services, port=port)
    api.timeout_s = timeout_s
    with ExitStack() as stack:
        stack.callback(api.stop)

        def ready() -> None:
            if api.ready:
                return
            api.wait_ready()
            os.environ["PREFECT_API_URL"] = api.url
            stack.callback(prefect.context.refresh_global_settings_context)  # runs after the pop below
            stack.callback(os.environ.pop, "PREFECT_API_URL", None)
            # Prefect read its settings when imported: refresh them (threads without a settings
            # context of their own read the global one) and cover the caller's context too.
            prefect.context.refresh_global_settings_context()
            stack.enter_context(temporary_settings(updates={"api.url": api.url}))

        yield ready
