"""SIGTERM ends ``glacial-lakes run`` by unwinding: its temporary Prefect server does not outlive it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from demo.synthetic import generate_demo_catalog
from tests.helpers.processes import alive, children, is_prefect_server

pytestmark = [pytest.mark.slow, pytest.mark.flow]

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_stops_the_temporary_prefect_server(db_url: str, tmp_path: Path) -> None:
    """Run until its temporary Prefect server is up, SIGTERM it: exit 143, and the server is gone."""
    catalog = generate_demo_catalog(tmp_path / "catalog", size_px=256)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(DATABASE_URL=db_url, GLACIAL_LAKES_HOME=str(tmp_path / "home"), GLACIAL_LAKES_MODEL="baseline")
    argv = [sys.executable, "-m", "flows.cli", "run", "--aoi", str(catalog.aoi_path), "--start", "2024-07-01"]
    argv += ["--end", "2024-09-30", "--source", f"local:{catalog.root}"]
    log = tmp_path / "run.log"  # a file, not a pipe: a leftover server would hold a pipe open for ever
    with log.open("w") as sink:
        run = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    server: int | None = None
    try:
        deadline = time.monotonic() + 120
        while server is None and time.monotonic() < deadline and run.poll() is None:
            server = next((pid for pid, cmd in children(run.pid).items() if is_prefect_server(cmd)), None)
            time.sleep(0.1)
        assert server is not None, f"no temporary Prefect server seen (exit {run.poll()})"
        run.send_signal(signal.SIGTERM)
        code = run.wait(timeout=60)
        assert code == 128 + signal.SIGTERM, log.read_text()[-2000:]
        for _ in range(100):  # the server was asked to stop before the run exited; allow it to finish
            if not alive(server):
                break
            time.sleep(0.1)
        assert not alive(server), f"temporary Prefect server {server} outlived the run"
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for pid in (server,) if server is not None and alive(server) else ():
            os.kill(pid, signal.SIGKILL)  # never leave one behind, even when the test fails
