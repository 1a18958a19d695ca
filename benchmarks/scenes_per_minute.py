"""Scenes per minute of ``update_inventory`` on the demo AOI: the default runner, then Dask with 1 and 2 workers.

Each configuration processes the same demo scenes (``--size`` px, seed 0; five S2 dates, four
paired) into a database of its own, cloned from one migrated template on a private PostGIS
cluster (fsync off), so every run computes and merges every scene. Timed: the whole flow call
(search, pairing, ledger, every scene, the report), not the start of the Dask cluster. Each Dask
cluster is started before its run, with the project's modules and torch imported in every worker
(a worker that stays up pays those once); the model is loaded by each worker on its first scene,
inside the timing, as in a real run.

- ``default``: scenes one after another in the flow's process (torch on every core).
- ``dask-N``: a local cluster of N worker processes, one thread each (torch on one core each:
  distributed sets ``OMP_NUM_THREADS=1`` in its workers).

Progress goes to stderr; a line per configuration, then one JSON object, go to stdout.

    .venv/bin/python benchmarks/scenes_per_minute.py --size 512 --model default   # from the project root
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from db.engine import normalise_url  # noqa: E402
from db.local_cluster import LocalCluster, ensure_postgis_installed  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from demo.synthetic import generate_demo_catalog  # noqa: E402
from flows.aoi import load_aoi  # noqa: E402
from flows.settings import load_settings, prepare_prefect_environment  # noqa: E402


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _admin(url: str, sql: str) -> None:
    engine = sa.create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(sql))
    finally:
        engine.dispose()


def _warm() -> str:
    """Run in every Dask worker before timing: the imports a long-lived worker pays once."""
    import torch  # noqa: F401

    import flows.tasks  # noqa: F401
    import models.registry  # noqa: F401

    return f"pid {os.getpid()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"


def _timed(run: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    report = run()
    return report, time.monotonic() - started


def main() -> None:
    """Print seconds and scenes per minute per configuration, then one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="demo scene edge, px (10 m)")
    parser.add_argument("--model", default="baseline", help="segmenter spec: baseline, default, a checkpoint")
    parser.add_argument("--workers", default="1,2", help="Dask worker counts to time, comma-separated")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",") if n]

    ensure_postgis_installed()
    root = Path(tempfile.mkdtemp(prefix="gl-bench-"))
    root.chmod(0o755)  # the postgres user must enter it when we are root
    os.environ["GLACIAL_LAKES_HOME"] = str(root / "home")
    cluster = LocalCluster(root / "pg", _free_port(), ("fsync=off", "synchronous_commit=off"))
    cluster.initialise()
    cluster.start()
    results: list[dict[str, Any]] = []
    try:
        base = cluster.admin_url("postgres")
        _admin(base, "CREATE DATABASE bench_template")
        template = normalise_url(base).set(database="bench_template").render_as_string(hide_password=False)
        upgrade(template, "head")
        catalog = generate_demo_catalog(root / "catalog", size_px=args.size, seed=0)
        window = {
            "aoi": load_aoi(catalog.aoi_path),
            "start": min(catalog.dates) - timedelta(days=1),
            "end": max(catalog.dates) + timedelta(days=1),
            "source": f"local:{catalog.root}",
            "model": args.model,
        }
        prepare_prefect_environment(load_settings())
        from distributed import Client
        from distributed import LocalCluster as DaskCluster

        from flows.prefect_server import prefect_api
        from flows.runner import RunnerSettings, scene_task_runner
        from flows.update_inventory import update_inventory

        def database(name: str) -> str:
            _admin(base, f'CREATE DATABASE "{name}" TEMPLATE bench_template')
            url = normalise_url(base).set(database=name).render_as_string(hide_password=False)
            os.environ["DATABASE_URL"] = url  # before a Dask cluster starts: its workers read their settings
            return url

        with prefect_api(lambda message: print(message, file=sys.stderr)) as ready:
            ready()
            configs: list[tuple[str, int]] = [("default", 0), *((f"dask-{n}", n) for n in counts)]
            for label, n in configs:
                database(f"bench_{label.replace('-', '_')}")
                print(f"{label}: running", file=sys.stderr, flush=True)
                if n == 0:
                    report, seconds = _timed(lambda: update_inventory(**window))
                else:
                    with (
                        DaskCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as dc,
                        Client(dc, set_as_default=False) as client,
                    ):
                        print(f"{label}: workers {sorted(client.run(_warm).values())}", file=sys.stderr)
                        runner = scene_task_runner(
                            RunnerSettings(task_runner="dask", dask_address=dc.scheduler_address)
                        )
                        flow = update_inventory.with_options(task_runner=runner)
                        report, seconds = _timed(lambda: flow(**window))  # noqa: B023  # called at once
                if report.failed or not report.processed:
                    sys.exit(f"{label}: {report.markdown()}")
                rate = report.processed / seconds * 60
                results.append(
                    {
                        "runner": label,
                        "scenes": report.processed,
                        "seconds": round(seconds, 2),
                        "scenes_per_minute": round(rate, 2),
                    }
                )
                print(f"{label}: {report.processed} scenes in {seconds:.1f} s = {rate:.2f} scenes/min", flush=True)
        print(
            json.dumps(
                {"size_px": args.size, "model": args.model, "cpus": os.cpu_count(), "results": results},
                sort_keys=True,
            )
        )
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
