"""No orphan Prefect server: ``kill -9`` of a run takes its server along, and the next start reaps leftovers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from demo.synthetic import DemoCatalog, generate_demo_catalog
from flows.prefect_server import (
    RECORD_DIR,
    PrefectServerError,
    ProcessId,
    ServerRecord,
    _from_proc,
    _from_ps,
    prefect_api,
    process_id,
    reap_stale_servers,
    start_server,
)
from tests.helpers.processes import alive, children, is_prefect_server

ROOT = Path(__file__).resolve().parents[2]
GONE_WITHIN_S = 15.0
"""The server's SIGTERM shutdown takes well under a second; the bound allows a loaded machine."""


def _gone(pid: int, within_s: float = GONE_WITHIN_S) -> bool:
    deadline = time.monotonic() + within_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive(pid)


def _kill(*pids: int | None) -> None:
    """SIGKILL what a failing test left running (never leave a server behind)."""
    for pid in pids:
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGKILL)


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _exited() -> ProcessId:
    """The identity of a process that has exited since (its pid is free, or reused by another)."""
    child = _sleeper()
    ident = process_id(child.pid)
    child.kill()
    child.wait()
    assert ident is not None
    return ident


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:
        child.kill()
        child.wait()


# ---------------------------------------------------------------------------------------
# The reaper's rules, on stand-in processes (fast)
# ---------------------------------------------------------------------------------------


def test_a_server_whose_run_is_gone_is_stopped_and_its_record_removed(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    server = _sleeper()
    sleepers.append(server)
    ident = process_id(server.pid)
    assert ident is not None
    path = ServerRecord(ident, _exited(), 4200).write(tmp_path)
    path.with_suffix(".log").write_text("server output")

    stopped = reap_stale_servers(tmp_path)

    assert [r.server for r in stopped] == [ident]
    assert server.wait(timeout=10) == -signal.SIGTERM  # asked politely first
    assert not list(tmp_path.iterdir())  # record and log removed


def test_a_server_whose_run_is_alive_is_left_alone(tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]) -> None:
    """Two runs under one home: the second start must not stop the first run's server."""
    server, owner = _sleeper(), _sleeper()
    sleepers += [server, owner]
    record = ServerRecord(process_id(server.pid), process_id(owner.pid), 4200)  # type: ignore[arg-type]
    path = record.write(tmp_path)

    assert reap_stale_servers(tmp_path) == []
    assert server.poll() is None and path.exists()


def test_a_reused_pid_is_never_signalled(tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]) -> None:
    """The recorded server's pid now names another process (other start time): record dropped, process kept."""
    bystander = _sleeper()
    sleepers.append(bystander)
    ident = process_id(bystander.pid)
    assert ident is not None
    ServerRecord(ProcessId(bystander.pid, f"{ident.started}0"), _exited(), 4200).write(tmp_path)

    assert reap_stale_servers(tmp_path) == []
    assert bystander.poll() is None
    assert not list(tmp_path.glob("*.json"))


def test_an_unreadable_record_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "123.json").write_text('{"server": {"pid": 1')  # cut short
    assert reap_stale_servers(tmp_path) == []
    assert not (tmp_path / "123.json").exists()


def test_a_record_is_private(tmp_path: Path) -> None:
    path = ServerRecord(ProcessId(1, "1"), ProcessId(2, "2"), 4200).write(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert ServerRecord.read(path) == ServerRecord(ProcessId(1, "1"), ProcessId(2, "2"), 4200)


@pytest.mark.parametrize("read", [_from_proc, _from_ps], ids=["proc", "ps"])
def test_process_identity_sees_start_time_and_counts_a_zombie_as_gone(read: Callable[[int], ProcessId | None]) -> None:
    """Both readers (``/proc`` on Linux, ``ps`` elsewhere): a stable identity while alive, None once exited."""
    child = _sleeper()
    try:
        first = read(child.pid)
        assert first is not None and first == read(child.pid) and first.pid == child.pid
        other = read(os.getpid())
        assert other is not None and other.started  # another process: its own start time
    finally:
        child.kill()
    deadline = time.monotonic() + 10
    while alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert read(child.pid) is None  # exited but not yet waited for: a zombie
    child.wait()
    assert read(child.pid) is None


def _servers() -> set[int]:
    """Pids of the Prefect servers among this process's children."""
    return {pid for pid, cmd in children(os.getpid()).items() if is_prefect_server(cmd)}


def test_a_configured_api_url_is_the_users_nothing_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    notes: list[str] = []
    before = _servers()  # an earlier in-process flow of the suite may have left Prefect's own
    with prefect_api(notes.append) as ready:
        ready()
        assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:9/api"
        assert _servers() - before == set()
    assert notes == []


def test_a_server_that_cannot_start_is_one_line_naming_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that exits while starting: the error names its log and quotes the cause; no record stays."""
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", f"sqlite+aiosqlite:///{tmp_path}/no/such/dir/x.db")
    api = start_server(tmp_path, 120)
    with pytest.raises(PrefectServerError) as caught:
        api.wait_ready()
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert "exited with status" in message and str(api.log_path) in message
    assert "unable to open database file" in message, message
    assert api.process is None and not list((tmp_path / RECORD_DIR).glob("*.json"))


@pytest.mark.slow
def test_ready_points_prefect_at_the_server_until_the_block_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process: Prefect's settings (already imported) name the server after ``ready``; restored after."""
    from prefect.settings import get_current_settings, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    before = _servers()
    with temporary_settings(updates={"home": tmp_path}, restore_defaults={"api.url"}):
        with prefect_api(lambda note: None) as ready:
            ready()
            url = os.environ["PREFECT_API_URL"]
            assert get_current_settings().api.url == url
            servers = sorted(_servers() - before)
            assert len(servers) == 1 and _answers(int(url.rsplit(":", 1)[1].split("/")[0]))
            assert len(list((tmp_path / RECORD_DIR).glob("*.json"))) == 1
        assert "PREFECT_API_URL" not in os.environ and get_current_settings().api.url is None
    assert _gone(servers[0], 1.0)  # stopped (and waited for) when the block ended
    assert not list((tmp_path / RECORD_DIR).iterdir())


# ---------------------------------------------------------------------------------------
# The real thing: `glacial-lakes run` in a subprocess, its real server
# ---------------------------------------------------------------------------------------


@pytest.fixture
def catalog(tmp_path: Path) -> DemoCatalog:
    return generate_demo_catalog(tmp_path / "catalog", size_px=256)


def _run_env(db_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(DATABASE_URL=db_url, GLACIAL_LAKES_HOME=str(home), GLACIAL_LAKES_MODEL="baseline")
    return env


def _run_argv(catalog: DemoCatalog, start: str, end: str) -> list[str]:
    argv = [sys.executable, "-m", "flows.cli", "run", "--aoi", str(catalog.aoi_path), "--start", start]
    return [*argv, "--end", end, "--source", f"local:{catalog.root}"]


def _server_port(cmdline: str) -> int:
    found = re.search(r"--port (\d+)", cmdline)
    assert found, cmdline
    return int(found.group(1))


def _answers(port: int) -> bool:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/api/health", timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.flow
def test_kill_9_of_a_run_takes_its_temporary_prefect_server_with_it(
    db_url: str, tmp_path: Path, catalog: DemoCatalog
) -> None:
    """Run until its temporary Prefect server answers, ``kill -9`` the run: the server is gone soon after."""
    log = tmp_path / "run.log"  # a file, not a pipe: a leftover server would hold a pipe open for ever
    with log.open("w") as sink:
        run = subprocess.Popen(
            _run_argv(catalog, "2024-07-01", "2024-09-30"),
            cwd=ROOT,
            env=_run_env(db_url, tmp_path / "home"),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server: int | None = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run.poll() is None:
            found = [(pid, cmd) for pid, cmd in children(run.pid).items() if is_prefect_server(cmd)]
            if found and _answers(_server_port(found[0][1])):
                server = found[0][0]
                break
            time.sleep(0.2)
        assert server is not None, f"no temporary Prefect server answered (exit {run.poll()}): {log.read_text()}"
        run.kill()  # SIGKILL: no handler, no finally, no atexit in the run
        assert run.wait(timeout=10) == -signal.SIGKILL
        assert _gone(server), f"temporary Prefect server {server} outlived its killed run"
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        _kill(server)


@pytest.mark.slow
@pytest.mark.flow
def test_the_next_run_reaps_a_server_its_killed_run_left(db_url: str, tmp_path: Path, catalog: DemoCatalog) -> None:
    """Where the kernel's death signal is missing, the record does it: the next run stops the leftover.

    The leftover is made the way a platform without ``PR_SET_PDEATHSIG`` would leave it: a real
    temporary server started without the death signal by a process then killed with SIGKILL.
    """
    home = tmp_path / "home"
    env = _run_env(db_url, home)
    prefect_home = home / "prefect"
    prefect_home.mkdir(parents=True)
    owner_code = (
        "import sys, time; from pathlib import Path; from flows.prefect_server import start_server\n"
        "api = start_server(Path(sys.argv[1]), 120, die_with_parent=False); api.wait_ready()\n"
        "print(api.process.pid, flush=True); time.sleep(600)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", owner_code, str(prefect_home)],
        cwd=ROOT,
        env={**env, "PREFECT_HOME": str(prefect_home)},
        stdout=subprocess.PIPE,
        text=True,
    )
    server: int | None = None
    try:
        assert owner.stdout is not None
        server = int(owner.stdout.readline())
        owner.kill()
        owner.wait(timeout=10)
        time.sleep(1)
        assert alive(server), "without the death signal the server outlives its run (the case to reap)"
        records = list((prefect_home / RECORD_DIR).glob("*.json"))
        assert [json.loads(p.read_text())["server"]["pid"] for p in records] == [server]

        # The next run: a window with no scenes, so the flow itself is quick.
        done = subprocess.run(
            _run_argv(catalog, "2020-01-01", "2020-01-02"),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"stopped a temporary Prefect server (pid {server}) left by a killed run" in done.stderr
        assert _gone(server, 1.0)
        assert not list((prefect_home / RECORD_DIR).glob("*.json")), "the next run's own server was not stopped"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        _kill(server)
