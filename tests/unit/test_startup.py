"""What a ``glacial-lakes run`` pays before its first scene: no torch on the baseline path, no
subcommand it does not call, the temporary Prefect server launched before Prefect imports (and
dropped when Prefect's own settings name another API).

Each check runs in a fresh interpreter: what a process has imported is the thing under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio

from tests.helpers.rasters import write_bands

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "terratorch", "huggingface_hub")


def _python(code: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_a_baseline_run_and_segment_call_never_import_torch(tmp_path: Path) -> None:
    """The modules a baseline ``run`` imports, and a whole baseline ``segment`` call: no torch, no terratorch."""
    rng = np.random.default_rng(3)
    s2 = write_bands(tmp_path / "s2.tif", rng.integers(200, 6000, (12, 64, 64)), "uint16")
    s1 = write_bands(tmp_path / "s1.tif", rng.uniform(-28, -3, (2, 64, 64)), "float32")
    dem = write_bands(tmp_path / "dem.tif", rng.integers(3500, 5200, (1, 64, 64)), "int16", nodata=-32768)
    out = tmp_path / "prob.tif"
    argv = ["segment", "--model", "baseline", "--s2", str(s2), "--s1", str(s1), "--dem", str(dem), "--out", str(out)]
    code = (
        "import json, sys\n"
        "import flows.cli\n"
        # What `run` imports on its way to the flow, and the flow's own modules.
        "import flows.aoi, flows.database, flows.prefect_server, flows.outcomes, flows.progress\n"
        "import flows.update_inventory, flows.tasks, flows.scene, tasks.segment\n"
        "from models.registry import load_segmenter\n"
        "load_segmenter('baseline')\n"
        f"try:\n    flows.cli.main({argv!r}, standalone_mode=False)\n"
        "finally:\n"
        f"    print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = _python(code, {"GLACIAL_LAKES_HOME": str(tmp_path / "home"), "GLACIAL_LAKES_MODEL": "baseline"})
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    with rasterio.open(out) as written:  # the call really segmented
        assert written.count == 1 and written.shape == (64, 64)


def test_subcommands_import_only_when_called() -> None:
    """``import flows.cli`` leaves the other commands' modules alone; each still resolves and is listed."""
    code = (
        "import json, sys, click\n"
        "import flows.cli as cli\n"
        "lazy = ['flows.glaciers_cli', 'flows.glof_cli', 'flows.map_cli', 'flows.runs_cli', 'flows.segment_cli',"
        " 'flows.serve_cli', 'flows.train_cli',"
        " 'db.runs']\n"
        "before = sorted(m for m in lazy if m in sys.modules)\n"
        "ctx = click.Context(cli.main)\n"
        "names = {n: cli.main.get_command(ctx, n).name for n in cli.LAZY_COMMANDS}\n"
        "print(json.dumps([before, names, cli.main.list_commands(ctx)]))\n"
    )
    before, names, listed = json.loads(_python(code).stdout.strip().splitlines()[-1])
    assert before == []
    assert names == {n: n for n in ("glaciers", "glof", "map", "runs", "segment", "serve", "train", "worker")}
    assert {"run", "rerun", "demo", "db", "export", "map", "runs", "segment", "serve", "train", "worker"} <= set(listed)


def test_the_server_launches_before_prefect_imports_and_a_profile_api_stops_it(tmp_path: Path) -> None:
    """The early server is launched for ``PREFECT_HOME``; a profile naming an API wins: ours is stopped, unrecorded."""
    home = tmp_path / "prefect"
    home.mkdir()
    profiles = tmp_path / "profiles.toml"
    profiles.write_text('active = "mine"\n[profiles.mine]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n')
    code = (
        "import json, os, sys\n"
        "from flows import prefect_server as ps\n"
        "launched = []\n"
        "real = ps.start_server\n"
        "def spy(*a, **k):\n"
        "    launched.append('prefect.settings' in sys.modules)\n"
        "    return real(*a, **k)\n"
        "ps.start_server = spy\n"
        "with ps.prefect_api(print) as ready:\n"
        "    ready()\n"
        "    url = os.environ.get('PREFECT_API_URL') or ps.configured_api_url()\n"
        f"records = sorted(p.name for p in (ps.Path({str(home)!r}) / ps.RECORD_DIR).glob('*'))\n"
        "print(json.dumps([launched, url, records]))\n"
    )
    env = {"PREFECT_HOME": str(home), "PREFECT_PROFILES_PATH": str(profiles)}
    launched, url, records = json.loads(_python(code, env).stdout.strip().splitlines()[-1])
    assert launched == [False]  # launched once, before Prefect was imported
    assert url == "http://127.0.0.1:9/api"
    assert records == []  # stopped: neither its record nor its log stays
