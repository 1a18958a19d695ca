"""Acceptance (issue 11): server + workers from ``deploy/prefect.yaml``, as the README's third way.

On a real ``prefect server start`` (loopback, its SQLite under the test's Prefect home):
``deploy/work-pools.sh`` creates the pools, ``prefect deploy`` registers the file's deployments
with their schedules, and ``glacial-lakes worker --pool lakes-cpu --run-once`` runs a scheduled
run of the demo's rolling deployment, a manual run of ``rerun``, then the next scheduled run,
which must cover the new window: from the AOI's last processed acquisition on (read from the
ledger). The demo deployment's daily cron is the one thing changed in the copy deployed, to
every minute, so its runs fall due within the test.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from demo.synthetic import generate_demo_catalog
from flows.prefect_server import start_server
from tests.deploy import rest
from tests.deploy.conftest import ROOT, child_env

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]

DEMO = "demo-tienshan-512px"
HAS_RERUN = (ROOT / "flows" / "rerun.py").exists()


def _run(argv: list[str], env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, (
        f"{' '.join(argv[:6])} … exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done


def _when(run: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(run["expected_start_time"].replace("Z", "+00:00"))


def _work_one(api: str, env: dict[str, str], run_id: str) -> dict[str, Any]:
    """A worker polls once (its flow run due now) and exits when the run is over; the run as the API has it."""
    _run([sys.executable, "-m", "flows.cli", "worker", "--pool", "lakes-cpu", "--run-once", "--limit", "1"], env, 240)
    (run,) = rest.flow_runs(api, id={"any_": [run_id]})
    return run


def _ledger(engine: sa.Engine, flow_run_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT status, counts FROM inventory.ingest_run WHERE flow_run_id = :f"), {"f": flow_run_id}
        ).one()
    return {"status": row.status, **row.counts}


def test_deployments_from_prefect_yaml_run_on_a_worker(writer_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    home = tmp_path / "home"
    generate_demo_catalog(home / "demo" / "catalog-512px", size_px=512, aoi_name=DEMO)  # what `demo` writes

    shipped = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    (demo,) = [d for d in shipped["deployments"] if d["name"] == DEMO]
    demo["schedules"] = [{"cron": "* * * * *", "timezone": "UTC"}]
    copy = tmp_path / "prefect.yaml"
    copy.write_text(yaml.safe_dump(shipped, sort_keys=False))

    server = start_server(tmp_path / "prefect", 120, services=True)
    try:
        server.wait_ready()
        api = server.url
        env = child_env(tmp_path, PREFECT_API_URL=api, DATABASE_URL=writer_url, GLACIAL_LAKES_MODEL="baseline")
        _run(["sh", str(ROOT / "deploy" / "work-pools.sh")], env, 120)
        names = [d["name"] for d in shipped["deployments"] if HAS_RERUN or d["name"] != "rerun"]
        which = ["--all"] if HAS_RERUN else [arg for n in names for arg in ("--name", n)]
        _run([sys.executable, "-m", "prefect", "deploy", *which, "--prefect-file", str(copy), "--no-prompt"], env, 300)

        registered = rest.deployments(api)
        assert set(registered) == set(names)
        for d in shipped["deployments"]:
            if d["name"] not in registered:
                continue
            got = registered[d["name"]]
            assert got["work_pool_name"] == d["work_pool"]["name"]
            assert got["global_concurrency_limit"]["limit"] == 1
            assert got["enforce_parameter_schema"] is True
            assert got["parameter_openapi_schema"]["properties"]["aoi"].get("$ref", "").endswith("AoiSpec") or (
                d["name"] == "rerun"
            )
            crons = [(s["schedule"]["cron"], s["active"]) for s in got["schedules"]]
            assert crons == [(s["cron"], s.get("active", True)) for s in d.get("schedules", [])], d["name"]
        assert "start" not in registered[DEMO]["parameters"] and "end" not in registered[DEMO]["parameters"]
        # {{ $GLACIAL_LAKES_HOME }} is filled in from the environment of `prefect deploy`.
        assert registered[DEMO]["parameters"]["source"] == f"local:{home}/demo/catalog-512px"

        def scheduled() -> list[dict[str, Any]]:
            return rest.flow_runs(
                api, deployment_id={"any_": [registered[DEMO]["id"]]}, state={"type": {"any_": ["SCHEDULED"]}}
            )

        def due() -> dict[str, Any] | None:
            runs = scheduled()
            return runs[0] if runs and _when(runs[0]) <= datetime.now(UTC) else None

        first = _work_one(api, env, rest.wait_for("a scheduled run to fall due", due, 90)["id"])
        assert first["state_type"] == "COMPLETED", first["state"]["message"]
        assert first["auto_scheduled"] is True
        ledger1 = _ledger(engine, first["id"])
        with engine.connect() as conn:
            lakes = conn.execute(sa.text("SELECT count(*) FROM inventory.current_lakes")).scalar_one()
        assert ledger1["status"] == "committed" and ledger1["found"] == 5 and ledger1["processed"] == 4
        assert lakes > 0

        if HAS_RERUN:
            rerun = rest.call(
                api,
                f"/deployments/{registered['rerun']['id']}/create_flow_run",
                {"parameters": {"model": "baseline"}},  # the deployment names the demo AOI, window and source
            )
            manual = _work_one(api, env, rerun["id"])
            assert manual["state_type"] == "COMPLETED", manual["state"]["message"]
            assert manual["auto_scheduled"] is False

        second = _work_one(api, env, rest.wait_for("the next scheduled run", due, 90)["id"])
        assert second["state_type"] == "COMPLETED", second["state"]["message"]
        assert _when(second) > _when(first)
        ledger2 = _ledger(engine, second["id"])
        # The new window starts on the last processed acquisition (2024-09-22): one S2 found,
        # already processed; the first run's window (the last `days` days) found all five.
        assert ledger2["status"] == "committed" and ledger2["found"] == 1
        assert ledger2["processed"] == 0 and ledger2["skipped"] == 1
        if not HAS_RERUN:
            pytest.skip("rerun flow not in this branch")  # everything else above passed
    finally:
        server.stop()
