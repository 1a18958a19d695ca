"""A ``glacial-lakes run`` killed mid-run never leaves its ledger row ``running``.

SIGKILL: nothing of the process runs, its database connection dies and with it the row's lease;
``glacial-lakes runs`` (like the next run's start) closes the row as ``crashed``. SIGTERM: the
run unwinds, and closes its own row as ``crashed`` on the way out.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from db.engine import make_engine
from demo.synthetic import generate_demo_catalog
from tests.helpers.processes import alive, children, is_prefect_server

pytestmark = [pytest.mark.db, pytest.mark.slow, pytest.mark.flow]

ROOT = Path(__file__).resolve().parents[2]
_RUNNING = sa.text("SELECT run_id FROM inventory.ingest_run WHERE status = 'running'")
_STATUS = sa.text("SELECT status, failures FROM inventory.ingest_run WHERE run_id = :id")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_a_killed_run_reads_crashed(
    sig: signal.Signals, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.cli import main

    catalog = generate_demo_catalog(tmp_path / "catalog", size_px=256)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(DATABASE_URL=db_url, GLACIAL_LAKES_HOME=str(tmp_path / "home"), GLACIAL_LAKES_MODEL="baseline")
    argv = [sys.executable, "-m", "flows.cli", "run", "--aoi", str(catalog.aoi_path), "--start", "2024-07-01"]
    argv += ["--end", "2024-09-30", "--source", f"local:{catalog.root}"]
    engine = make_engine(db_url)
    log = tmp_path / "run.log"
    with log.open("w") as sink:
        run = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    servers: set[int] = set()
    try:
        run_id = None
        deadline = time.monotonic() + 180
        while run_id is None and time.monotonic() < deadline and run.poll() is None:
            servers |= {pid for pid, cmd in children(run.pid).items() if is_prefect_server(cmd)}
            with engine.connect() as conn:
                run_id = conn.execute(_RUNNING).scalar()
            time.sleep(0.05)
        assert run_id is not None, f"the run never opened its row (exit {run.poll()}): {log.read_text()[-2000:]}"
        run.send_signal(sig)
        run.wait(timeout=60)
        monkeypatch.setenv("DATABASE_URL", db_url)
        result = CliRunner().invoke(main, ["runs"])
        assert result.exit_code == 0, result.output
        with engine.connect() as conn:
            status, failures = conn.execute(_STATUS, {"id": run_id}).one()
        assert status == "crashed", (status, failures, log.read_text()[-2000:])
        assert result.output.startswith(f"#{run_id} ") and " crashed " in result.output.splitlines()[0]
        print(f"{sig.name}: run {run_id} closed crashed ({failures[0]['error']})")
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for pid in servers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        engine.dispose()
