"""``deploy/prefect.yaml`` as written: rolling schedules, limits, pools, and a demo AOI its DEM covers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.features import geometry_mask
from shapely.geometry import box, shape

from demo.synthetic import generate_demo_catalog
from flows.aoi import AoiSpec
from tests.deploy.conftest import ROOT

DEPLOY = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
BY_NAME = {d["name"]: d for d in DEPLOY["deployments"]}


def test_every_deployment_is_a_module_entrypoint_with_a_limit_on_a_created_pool() -> None:
    created = (ROOT / "deploy" / "work-pools.sh").read_text()
    assert DEPLOY["pull"] == []  # the installed package is run: nothing copied, no working directory
    for name, d in BY_NAME.items():
        assert ":" not in d["entrypoint"] and d["entrypoint"].startswith("flows."), name
        assert d["enforce_parameter_schema"] is True, name
        assert d["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}, name
        assert f"work-pool create {d['work_pool']['name']} --type process" in created, name
    assert {d["work_pool"]["name"] for d in BY_NAME.values()} == {"lakes-cpu", "lakes-gpu"}
    assert BY_NAME["rerun"]["entrypoint"] == "flows.rerun.rerun"


def test_rolling_deployments_have_no_fixed_window_and_a_daily_utc_schedule() -> None:
    rolling = [d for d in BY_NAME.values() if d["entrypoint"] == "flows.update_inventory.update_inventory"]
    assert {d["name"] for d in rolling} == {"demo-tienshan-512px", "khumbu-imja"}
    for d in rolling:
        assert "start" not in d["parameters"] and "end" not in d["parameters"], d["name"]
        AoiSpec.model_validate(d["parameters"]["aoi"])  # the AOI rules of the CLI
        assert d["parameters"]["aoi"]["name"] == d["name"]  # one deployment per AOI, named by it
        (schedule,) = d["schedules"]
        assert schedule["cron"] == "0 6 * * *" and schedule["timezone"] == "UTC"
    # The GPU pool is optional: its deployment's schedule is off until a GPU worker runs.
    assert BY_NAME["khumbu-imja"]["work_pool"]["name"] == "lakes-gpu"
    assert BY_NAME["khumbu-imja"]["schedules"][0]["active"] is False
    assert BY_NAME["demo-tienshan-512px"]["schedules"][0].get("active", True) is True


def test_work_pool_script_is_valid_shell() -> None:
    assert subprocess.run(["sh", "-n", str(ROOT / "deploy" / "work-pools.sh")]).returncode == 0


@pytest.mark.slow
def test_demo_aoi_is_the_demos_own_and_its_dem_covers_it(tmp_path: Path) -> None:
    """The old AOI reached past the demo's imagery: only 88 % of it had DEM, every scene was skipped."""
    catalog = generate_demo_catalog(tmp_path, size_px=512, aoi_name="demo-tienshan-512px")
    feature = json.loads(catalog.aoi_path.read_text())["features"][0]
    ours = BY_NAME["demo-tienshan-512px"]["parameters"]["aoi"]
    assert ours["name"] == feature["properties"]["name"]
    assert shape(ours["geometry"]).equals_exact(shape(feature["geometry"]), 1e-12)
    (dem,) = (tmp_path / "cop-dem-glo-30").rglob("*.tif")
    with rasterio.open(dem) as src:
        outside = geometry_mask([ours["geometry"]], out_shape=src.shape, transform=src.transform, all_touched=True)
        values = src.read(1, masked=True)
        assert src.crs.to_epsg() == 4326 and box(*src.bounds).contains(shape(ours["geometry"]))
    inside = ~outside
    assert inside.sum() > 0
    assert not np.ma.getmaskarray(values)[inside].any(), "DEM nodata inside the demo AOI"
