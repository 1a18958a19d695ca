"""``benchmarks/tile_scale.py``: the synthetic tile repeats the demo world, and one small run reports every key."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import rasterio

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "tile_scale.py"
WORLD = 256


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gl_bench_tile_scale", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tile_repeats_every_input_file_of_the_world(tmp_path: Path) -> None:
    """Each tiled file is its world file repeated with the world file's own size as the period."""
    bench = _bench()
    plan, tile_grid, crop_grid = bench.build_tile(tmp_path, 600, WORLD)
    world, _ = bench._demo_plan(tmp_path / f"world-{WORLD}", WORLD)
    assert (tile_grid.width, tile_grid.height) == (600, 600)
    assert (crop_grid.width, crop_grid.transform) == (WORLD, tile_grid.transform)
    pairs = [*zip(world.s2.assets, plan.s2.assets, strict=True), *zip(world.s1.assets, plan.s1.assets, strict=True)]
    pairs += [(w.assets[0], t.assets[0]) for w, t in zip(world.dems, plan.dems, strict=True)]
    assert len(pairs) >= 15  # 12 S2 bands + SCL, VV + VH, the DEM
    for (key, source), (tiled_key, tiled) in pairs:
        assert key == tiled_key and tiled != source
        with rasterio.open(source) as src, rasterio.open(tiled) as out:
            assert (out.crs, out.transform, out.dtypes) == (src.crs, src.transform, src.dtypes)
            np.testing.assert_equal(out.nodata, src.nodata)  # NaN equals NaN here
            assert out.width >= src.width * 600 / WORLD and out.height >= src.height * 600 / WORLD
            data, repeated = src.read(), out.read()
        h, w = data.shape[1:]
        np.testing.assert_array_equal(repeated[:, :h, :w], data)
        np.testing.assert_array_equal(repeated[:, h : 2 * h, w : 2 * w], data)  # the next copy, diagonally


@pytest.mark.slow
def test_a_small_run_prints_every_stage_and_the_json_keys(tmp_path: Path) -> None:
    """End to end on a private PostGIS: the stages' lines, then the JSON line the acceptance reads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PYTHONPATH=str(ROOT), GLACIAL_LAKES_HOME=str(tmp_path / "home"))
    argv = [sys.executable, str(BENCH), "--tile-px", "600", "--world-px", str(WORLD), "--skip-model"]
    done = subprocess.run(
        [*argv, "--work", str(tmp_path / "work")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    for key in ("tile_px", "peak_rss_gb", "peak_rss_2048_gb", "non_model_s", "raw_read_warp_s"):
        assert summary[key] > 0, key
    assert summary["tile_px"] == 600 and summary["stack_bytes_per_km2"] > 0
    assert summary["lakes"] > summary["lakes_2048"] > 0  # the tile holds several copies of the world's lakes
    assert set(summary["stages"]) == {"prepare", "segment", "extract", "merge"}
    for stage in summary["stages"].values():
        assert stage["s"] > 0 and stage["km2_per_min"] > 0 and stage["peak_rss_gb"] > 0
    raw = [line.split()[1] for line in lines if line.split()[0] == "raw"]
    assert raw == ["read+warp", "to_postgis"]
