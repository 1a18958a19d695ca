"""``glacial-lakes run --source safe:DIR`` as a user runs it, against ``--source local:DIR`` on the same scenes.

The demo scenes are written twice: as the demo's static catalog (COGs) and as SAFE products
(S2 L2A JPEG 2000, S1 GRD DN in radar geometry with the real calibration and noise LUTs), beside
it (:func:`tests.helpers.safe_products.safe_products_for_demo`). Both runs go into one inventory
under two AOI names; every lake observation of one must have its counterpart in the other, same
scene date, area within one 10 m pixel.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]

PIXEL_M2 = 100.0


def test_run_from_safe_products_maps_the_lakes_of_the_stac_path(
    db_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_backend: None
) -> None:
    from db.ledger import present_observations, scene_table
    from demo.synthetic.acquisitions import S2_SCHEDULE
    from flows.cli import main
    from tasks.grid import utm_epsg_for
    from tests.helpers.safe_products import safe_products_for_demo

    root = tmp_path / "products"
    safe_products_for_demo(root, size_px=256)
    aoi_path = root / "dem" / "aoi.geojson"
    for name, value in {
        "DATABASE_URL": db_url,
        "GLACIAL_LAKES_HOME": str(tmp_path / "home"),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "prefect" / "storage"),
    }.items():
        monkeypatch.setenv(name, value)
    days = [d for d, _, _ in S2_SCHEDULE]
    start, end = min(days) - timedelta(days=1), max(days) + timedelta(days=1)
    for name, source in (("via-stac", f"local:{root / 'dem'}"), ("via-safe", f"safe:{root}")):
        args = ["run", "--aoi", str(aoi_path), "--start", f"{start}", "--end", f"{end}", "--name", name]
        result = CliRunner().invoke(main, [*args, "--source", source, "--model", "baseline"])
        assert result.exit_code == 0, result.output

    scenes = {name: scene_table(engine, name) for name in ("via-stac", "via-safe")}
    assert len(scenes["via-safe"]) == len(days) - 1  # one S2 date has no S1 within 7 days
    assert [s["s2_product_id"] for s in scenes["via-safe"]] == [s["s2_product_id"] for s in scenes["via-stac"]]

    stac, safe = present_observations(engine, "via-stac"), present_observations(engine, "via-safe")
    assert len(stac) > 0 and len(safe) == len(stac)
    centroid = stac.geometry.union_all().centroid
    epsg = utm_epsg_for(centroid.x, centroid.y)
    stac_m, safe_m = stac.to_crs(epsg), safe.to_crs(epsg)
    worst = 0.0
    for _, lake in stac_m.iterrows():
        same_scene = safe_m[safe_m["s2_product_id"] == lake["s2_product_id"]]
        match = same_scene[same_scene.intersects(lake["geom"])]
        assert len(match) == 1, f"lake {lake['lake_id']} of {lake['s2_product_id']} has {len(match)} counterparts"
        diff = abs(float(match.iloc[0]["area_m2"]) - float(lake["area_m2"]))
        worst = max(worst, diff)
        assert diff <= PIXEL_M2, (lake["s2_product_id"], lake["area_m2"], match.iloc[0]["area_m2"])
    print(f"{len(stac)} lake observations; largest area difference SAFE vs STAC: {worst:.1f} m²")
