"""Wall time of ``glacial-lakes run`` over a window with no scenes: Python imports, the Prefect API, a flow.

What dominates such a run is getting a Prefect API up, so this compares source trees on exactly
that (e.g. one without and one with :mod:`flows.prefect_server`). Each tree gets its own home;
the first run of each (Prefect creates its database) is not counted; trees alternate so that a
changing machine load hits them alike.

    .venv/bin/python benchmarks/run_start_time.py --runs 5 OLD_TREE NEW_TREE   # from the project root

A private PostGIS cluster (fsync off) is started under a temporary folder and removed after.
``--local-database``: no ``DATABASE_URL``; each tree's run uses the project's own local cluster
under its home (its own port), stopped before every run, so the run's start includes starting
and checking it (what a user's first run of the day pays).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from db.local_cluster import LocalCluster, ensure_postgis_installed
from db.migrate import upgrade
from demo.synthetic import generate_demo_catalog


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    """Print each run's seconds, then the median, min and max per tree."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path, help="source trees (checkouts) to compare")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per tree")
    parser.add_argument("--local-database", action="store_true", help="each home's own cluster, stopped before a run")
    args = parser.parse_args()
    ensure_postgis_installed()
    root = Path(tempfile.mkdtemp(prefix="gl-bench-"))
    root.chmod(0o755)  # the postgres user must enter it when we are root
    cluster = LocalCluster(root / "pg", _free_port(), ("fsync=off",))
    cluster.initialise()
    cluster.start()
    ports = [_free_port() for _ in args.trees]  # --local-database: each home's cluster
    try:
        url = cluster.admin_url("postgres")
        upgrade(url, "head")
        catalog = generate_demo_catalog(root / "catalog", size_px=256)
        times: dict[Path, list[float]] = {tree: [] for tree in args.trees}
        for i in range(args.runs + 1):
            for n, tree in enumerate(args.trees):
                env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
                env.update(GLACIAL_LAKES_HOME=str(root / f"home-{n}"), PYTHONPATH=str(tree))
                env["GLACIAL_LAKES_MODEL"] = "baseline"
                if args.local_database:
                    env.pop("DATABASE_URL", None)
                    env["GLACIAL_LAKES_PG_PORT"] = str(ports[n])
                    stop = [sys.executable, "-m", "flows.cli", "db", "stop"]
                    subprocess.run(stop, cwd=tree, env=env, capture_output=True, check=True)
                else:
                    env["DATABASE_URL"] = url
                argv = [sys.executable, "-m", "flows.cli", "run", "--aoi", str(catalog.aoi_path)]
                argv += ["--start", "2020-01-01", "--end", "2020-01-02", "--source", f"local:{catalog.root}"]
                started = time.monotonic()
                done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)
                seconds = time.monotonic() - started
                if done.returncode != 0:
                    sys.exit(f"{tree}: exit {done.returncode}: {done.stderr[-2000:]}")
                if i:
                    times[tree].append(seconds)
                print(f"{tree}  run {i}  {seconds:.2f} s{'  (not counted)' if not i else ''}", flush=True)
        for tree, ts in times.items():
            print(f"{tree}: median {statistics.median(ts):.2f} s, min {min(ts):.2f} s, max {max(ts):.2f} s")
    finally:
        cluster.stop()
        for n, tree in enumerate(args.trees if args.local_database else []):
            env = {**os.environ, "GLACIAL_LAKES_HOME": str(root / f"home-{n}"), "PYTHONPATH": str(tree)}
            env["GLACIAL_LAKES_PG_PORT"] = str(ports[n])
            subprocess.run([sys.executable, "-m", "flows.cli", "db", "stop"], cwd=tree, env=env, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
