"""Acceptance (issue 11): ``glacial-lakes serve`` on one host; a scheduled run fires and fills the inventory.

No Prefect API is configured, so ``serve`` starts a real ``prefect server start`` (scheduler on,
its SQLite under the test's Prefect home, loopback) and serves the AOI's rolling deployment on a
60 s interval. The first scheduled run must complete on its own and fill the inventory; SIGTERM
stops serving, and the server goes with it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from demo.synthetic import generate_demo_catalog
from flows.aoi import load_aoi
from tests.deploy import rest
from tests.deploy.conftest import ROOT, child_env
from tests.helpers import free_port

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]


def test_served_rolling_deployment_fires_and_fills_the_inventory(
    writer_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    catalog = generate_demo_catalog(tmp_path / "catalog", size_px=256, seed=0, aoi_name="served-demo")
    # The demo's acquisitions are from 2024: the AOI's first rolling window must reach them.
    days = (datetime.now(UTC).date() - date(2024, 7, 1)).days + 1
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = child_env(tmp_path, DATABASE_URL=writer_url, GLACIAL_LAKES_MODEL="baseline")
    argv = [sys.executable, "-m", "flows.cli", "serve", "--aoi", str(catalog.aoi_path)]
    argv += ["--source", f"local:{catalog.root}", "--interval", "60", "--days", str(days), "--port", str(port)]
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def output() -> str:
        return (tmp_path / "serve.log").read_text(errors="replace")[-4000:]

    try:
        alive = lambda: serve.poll() is None  # noqa: E731
        rest.wait_for("the Prefect server serve starts", lambda: rest.healthy(api), 120, alive)
        (deployment,) = rest.wait_for("the rolling deployment", lambda: list(rest.deployments(api).values()), 60, alive)
        assert deployment["name"] == "rolling-served-demo"
        assert deployment["schedules"][0]["schedule"]["interval"] == 60
        assert deployment["global_concurrency_limit"]["limit"] == 1
        assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
        assert "start" not in deployment["parameters"] and "end" not in deployment["parameters"]

        def finished() -> list[dict[str, object]]:
            return rest.flow_runs(api, state={"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}})

        try:
            runs = rest.wait_for("a scheduled run to finish", finished, 150, alive)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{output()}") from None
        run = runs[0]
        assert run["state_type"] == "COMPLETED", f"{run['state_name']}: {run['state']['message']}\n{output()}"
        assert run["auto_scheduled"] is True and run["deployment_id"] == deployment["id"]
        assert run["parameters"]["days"] == days

        aoi = load_aoi(catalog.aoi_path)
        with engine.connect() as conn:  # read back as the superuser
            lakes = conn.execute(sa.text("SELECT count(*) FROM inventory.current_lakes")).scalar_one()
            scenes = conn.execute(
                sa.text("SELECT count(*) FROM inventory.scene s JOIN inventory.aoi a USING (aoi_id) WHERE a.name = :n"),
                {"n": aoi.name},
            ).scalar_one()
            flow_run_ids = set(conn.execute(sa.text("SELECT flow_run_id FROM inventory.ingest_run")).scalars())
        assert scenes == 4 and lakes > 0  # 5 S2 dates, one without an S1 partner
        assert run["id"] in flow_run_ids

        # A second serve on the same port, with no API configured, is told to use the running server.
        again = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 2, again.stderr
        assert f"PREFECT_API_URL=http://127.0.0.1:{port}/api" in again.stderr
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
        try:
            code = serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
            raise AssertionError(f"serve did not stop on SIGTERM\n{output()}") from None
        log.close()
    assert code in (0, 143), output()
    rest.wait_for("the server to stop with serve", lambda: not rest.healthy(api), 30)
