"""The README's promise, as a user runs it: ``glacial-lakes demo`` on an empty home, no DATABASE_URL.

Runs the real console script in fresh processes: the project installs nothing here (PostGIS is
already present) but initialises and starts its own cluster on a private port, migrates it,
generates the demo catalog, runs the flow on a temporary Prefect server, prints agreement
with truth; then ``export --as-of 1900-01-01`` is empty and ``db stop`` stops the cluster.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import pytest

from tests.helpers.database import free_port

pytestmark = [pytest.mark.slow, pytest.mark.db]

SCRIPT = Path(sys.executable).with_name("glacial-lakes")


@pytest.fixture
def home() -> Iterator[Path]:
    # Not pytest's tmp_path: its parents are mode 700, and the postgres user must reach the cluster.
    path = Path(tempfile.mkdtemp(prefix="gl-demo-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _cli(home: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DATABASE_URL"))}
    env.update(GLACIAL_LAKES_HOME=str(home / "state"), GLACIAL_LAKES_PG_PORT=str(port))
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=600)


def test_demo_from_empty_home(home: Path) -> None:
    port = free_port()
    try:
        run = _cli(home, port, "demo", "--size", "256")
        assert run.returncode == 0, run.stderr[-3000:]
        m = re.search(r"recall ([\d.]+), precision ([\d.]+), median area error ([\d.]+)%", run.stdout)
        assert m, run.stdout
        recall, precision, area_error = float(m[1]), float(m[2]), float(m[3]) / 100
        assert recall >= 0.95 and precision >= 0.95 and area_error <= 0.10, m[0]
        # The growing lake (11.4 ha on the last date, 200 m from the glacier) and no other.
        glof = re.search(r"GLOF screening .*: (\d+) flagged (.*)", run.stdout)
        assert glof and glof[1] == "1" and re.fullmatch(r"lake \d+ \(contact_growth, 1[01]\.\d ha\)", glof[2]), (
            run.stdout
        )
        assert (home / "state" / "postgres").is_dir(), "the cluster lives under GLACIAL_LAKES_HOME"

        out = home / "old.gpkg"
        export = _cli(home, port, "export", "--out", str(out), "--as-of", "1900-01-01")
        assert export.returncode == 0, export.stderr[-2000:]
        assert len(gpd.read_file(out)) == 0
        current = home / "now.geojson"
        assert _cli(home, port, "export", "--out", str(current)).returncode == 0
        assert len(gpd.read_file(current)) >= 3
    finally:
        stop = _cli(home, port, "db", "stop")
    assert stop.returncode == 0 and "stopped" in stop.stdout
