"""The demo inventory's attributes against the generator's truth: area, elevation, growth.

Runs ``update_inventory`` over a generated demo catalog, then compares each present observation
with the truth lake it overlaps on its date (area within 10 %, median DEM elevation within 5 m of
the lake's surface level), the growing lake's Theil–Sen rate (``lake_growth``) with the same
estimator over the truth's areas (within 20 %), and the stable lakes' rates with zero.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from scipy import stats
from sqlalchemy import Engine

from db import queries
from demo.synthetic import DemoCatalog, generate_demo_catalog, load_truth
from tests.helpers import write_report
from tests.helpers.flow_runs import demo_window

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]

SECONDS_PER_YEAR = 365.25 * 86400.0


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return generate_demo_catalog(tmp_path_factory.mktemp("catalog"), size_px=256, seed=0)


def _observations(engine: Engine) -> gpd.GeoDataFrame:
    sql = """
        SELECT o.lake_id, o.sensing_time, o.area_m2, o.elevation_m, o.perimeter_m, o.perimeter_smoothed_m,
               o.area_uncertainty_m2, o.surrounding_slope_deg, o.probability_entropy, o.volume_m3,
               o.volume_uncertainty_m3, o.geom
        FROM inventory.lake_observation AS o WHERE o.present ORDER BY o.lake_id, o.sensing_time
    """
    with engine.connect() as conn:
        return gpd.read_postgis(sql, conn, geom_col="geom")


def test_demo_attributes_against_truth(
    catalog: DemoCatalog,
    db_url: str,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefect_backend: None,
) -> None:
    from flows.update_inventory import update_inventory

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path / "home"))
    report = update_inventory(**demo_window(catalog))
    assert report.failed == 0, report.markdown()
    truth = load_truth(catalog.truth_path)
    obs = _observations(engine)
    assert len(obs) > 0

    # Every observation of a visible truth lake on its date: area and elevation.
    matched = 0
    area_errors: list[float] = []
    elevation_errors: list[float] = []
    names: dict[int, set[str]] = {}
    for row in obs.itertuples():
        day = row.sensing_time.date()
        same_day = truth[(truth["date"] == day) & truth["visible"] & truth.intersects(row.geom)]
        if len(same_day) != 1:
            continue
        t = same_day.iloc[0]
        names.setdefault(int(row.lake_id), set()).add(str(t["lake"]))
        matched += 1
        area_errors.append(abs(row.area_m2 / t["area_m2"] - 1))
        elevation_errors.append(abs(row.elevation_m - t["level_m"]))
        assert row.area_m2 == pytest.approx(t["area_m2"], rel=0.10), (t["lake"], day)
        assert row.elevation_m == pytest.approx(t["level_m"], abs=5.0), (t["lake"], day)
        # The other measures are there, in their ranges.
        assert 0 < row.perimeter_smoothed_m < row.perimeter_m
        assert row.area_uncertainty_m2 == pytest.approx(5.0 * row.perimeter_m)
        assert 0 <= row.surrounding_slope_deg < 90 and 0 <= row.probability_entropy <= 1
        assert row.volume_m3 > 0 and 0 < row.volume_uncertainty_m3 < row.volume_m3
    assert matched >= 10
    assert all(len(v) == 1 for v in names.values()), names  # one truth lake per inventory lake
    lake_of = {next(iter(v)): k for k, v in names.items()}

    growth = queries.lake_growth(engine).set_index("lake_id")
    grow = truth[(truth["lake"] == "growing") & truth["visible"]].sort_values("date")
    seen = {r.sensing_time.date(): r.sensing_time for r in obs[obs.lake_id == lake_of["growing"]].itertuples()}
    grow = grow[grow["date"].isin(list(seen))]  # the dates the inventory saw it
    years = np.array([seen[d].timestamp() / SECONDS_PER_YEAR for d in grow["date"]])
    truth_rate = stats.theilslopes(grow["area_m2"].to_numpy(), years).slope
    measured = growth.loc[lake_of["growing"]]
    assert truth_rate > 0 and measured.growth_rate_m2_per_year == pytest.approx(truth_rate, rel=0.20)
    assert measured.growth_rate_ci_low > 0 and measured.n_obs == len(seen)

    write_report(
        "demo_attributes",
        {
            "observations_matched": matched,
            "max_area_error_pct": round(100 * max(area_errors), 2),
            "max_elevation_error_m": round(max(elevation_errors), 2),
            "growing_rate_m2_per_year": {
                "truth": round(truth_rate),
                "inventory": round(measured.growth_rate_m2_per_year),
            },
            "stable_rates_m2_per_year": {
                n: round(growth.loc[lake_of[n]].growth_rate_m2_per_year) for n in ("stable-1", "clouded")
            },
        },
    )
    for name in ("stable-1", "clouded"):
        lake = growth.loc[lake_of[name]]
        # ~0: under 5 % of the truth's growth rate, and the interval holds zero.
        assert abs(lake.growth_rate_m2_per_year) < 0.05 * truth_rate, name
        assert lake.growth_rate_ci_low <= 0 <= lake.growth_rate_ci_high, name
        assert "baseline" in lake.model_versions
