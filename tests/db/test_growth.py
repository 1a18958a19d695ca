"""Growth in SQL: ``lake_growth`` (Theil–Sen rate with its interval), area change in %, provenance.

The view's rate and interval are those of ``scipy.stats.theilslopes`` over the same observations;
one outlier (a partial ice cover) moves them little where a least-squares line would follow it.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from scipy import stats

from db import queries
from db.merge import ensure_aoi, merge_scene, stale_histories
from db.schema import SCHEMA
from tests import helpers as h

pytestmark = pytest.mark.db

AOI = "growth"
RATE = 4_000.0
"""True growth of the growing lake, m² per year."""
YEAR_DAYS = 365.25


def _radius(area_m2: float) -> float:
    # helpers.disc draws a 64-gon: its area is (64/2π)·sin(2π/64)·r² of the circle's πr².
    return math.sqrt(area_m2 / (32 * math.sin(2 * math.pi / 64)))


def _merge_series(engine: sa.Engine) -> tuple[list[float], list[float]]:
    """A growing lake (+RATE m²/year, one ice-covered scene at 40 % of its area) and a stable one
    (same outline every time), every 30 days for two years; (days, true areas) of the growing one.
    """
    ensure_aoi(engine, AOI, h.footprint(), h.UTM)
    days = [30.0 * i for i in range(25)]
    areas = [50_000.0 + RATE * d / YEAR_DAYS for d in days]
    areas[21] *= 0.4  # partial ice cover: most of the lake reads as not water
    for i, (d, a) in enumerate(zip(days, areas, strict=True)):
        merge_scene(engine, h.scene(f"g{i}", d, [h.disc(0, 0, _radius(a)), h.disc(2_500, 0, 80.0)], aoi=AOI))
    return days, areas


def _observed(engine: sa.Engine, lake_id: int) -> tuple[np.ndarray, np.ndarray]:
    sql = f"""
        SELECT CAST(EXTRACT(epoch FROM sensing_time) AS double precision) / 31557600.0, area_m2
        FROM {SCHEMA}.lake_observation WHERE lake_id = :l AND present ORDER BY sensing_time
    """
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql), {"l": lake_id}).all()
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


def test_growth_rate_is_theil_sen_with_its_interval_and_resists_an_outlier(engine: sa.Engine) -> None:
    days, _ = _merge_series(engine)
    growth = queries.lake_growth(engine, AOI)
    assert list(growth.columns) == list(queries.GROWTH_COLUMNS) and len(growth) == 2
    growing, stable = (growth[growth.area_m2 > 30_000].iloc[0], growth[growth.area_m2 < 30_000].iloc[0])

    t, area = _observed(engine, int(growing.lake_id))
    expected = stats.theilslopes(area, t)
    assert growing.n_obs == len(days) == len(t)
    assert growing.growth_rate_m2_per_year == pytest.approx(expected.slope, rel=1e-9)
    assert (growing.growth_rate_ci_low, growing.growth_rate_ci_high) == pytest.approx(
        (expected.low_slope, expected.high_slope), rel=1e-9
    )
    # Robust: within 2 % of the truth and inside its interval, where least squares is off by far more.
    assert growing.growth_rate_m2_per_year == pytest.approx(RATE, rel=0.02)
    assert growing.growth_rate_ci_low < RATE < growing.growth_rate_ci_high
    assert abs(stats.linregress(t, area).slope - RATE) > 0.25 * RATE

    # Same outline every time: ties in area; rate 0, interval [0, 0] as scipy has it.
    t, area = _observed(engine, int(stable.lake_id))
    expected = stats.theilslopes(area, t)
    assert (stable.growth_rate_m2_per_year, stable.growth_rate_ci_low, stable.growth_rate_ci_high) == (
        pytest.approx(expected.slope, abs=1e-9),
        pytest.approx(expected.low_slope, abs=1e-9),
        pytest.approx(expected.high_slope, abs=1e-9),
    )
    assert stable.growth_rate_m2_per_year == 0.0

    # Provenance: every present observation's scene, one model version.
    assert len(growing.scene_ids) == len(days) and growing.model_versions == "test-model"
    assert growing.s2_product_ids[0] == "S2A_MSIL2A_0" and growing.model_version == "test-model"
    assert growing.first_seen == h.T0 and (growing.last_seen - h.T0).days == days[-1]
    assert stale_histories(engine, AOI) == []


def test_area_change_pct_and_model_version_in_views_and_export(engine: sa.Engine) -> None:
    _merge_series(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT area_m2, area_change_m2, area_change_pct, status, model_version FROM {SCHEMA}.lake_changes "
                "WHERE area_change_m2 IS NOT NULL ORDER BY valid_from"
            )
        ).all()
        growing = conn.execute(
            sa.text(f"SELECT lake_id, trend_m2_per_year, trend_ci_low FROM {SCHEMA}.growing_lakes")
        ).all()
    assert rows, "the growing lake has versions after its first"
    for area, change, pct, status, model in rows:
        assert status == "active" and model == "test-model"
        assert pct == pytest.approx(100 * change / (area - change))
    # The ice-covered scene opened a shrunk version and the next one a grown version: both in %.
    assert any(r[2] < -50 for r in rows)
    assert len(growing) == 1 and growing[0][1] == pytest.approx(RATE, rel=0.02) and growing[0][2] > 0
    current = queries.lakes_as_of(engine, aoi=AOI)
    assert set(current.model_version) == {"test-model"} and set(current.n_observations) == {25}
    then = queries.lakes_as_of(engine, h.T0 + timedelta(days=100), aoi=AOI)  # scenes of days 0, 30, 60, 90
    assert set(then.n_observations) == {4} and set(then.model_version) == {"test-model"}


def test_measured_attributes_reach_the_lake_its_versions_and_the_exports(engine: sa.Engine) -> None:
    """The new attributes travel from the record through the merge (fast path and rebuild) to
    ``lake``, ``lake_version``, the views and the export; NULL (not 0) where the record has None.
    """
    ensure_aoi(engine, AOI, h.footprint(), h.UTM)
    filled = {
        "perimeter_smoothed_m": 1_100.0,
        "area_uncertainty_m2": 6_000.0,
        "surrounding_slope_deg": 21.5,
        "probability_entropy": 0.25,
        "volume_m3": 2.0e6,
        "volume_uncertainty_m3": 4.0e5,
    }
    merge_scene(engine, h.scene("m0", 0, [replace(h.disc(0, 0, 200.0), **filled), h.disc(2_500, 0, 80.0)], aoi=AOI))
    grown = replace(h.disc(0, 0, 260.0), **{k: 2 * v for k, v in filled.items()})
    merge_scene(engine, h.scene("m2", 20, [grown, h.disc(2_500, 0, 80.0)], aoi=AOI))
    merge_scene(engine, h.scene("m1", 10, [replace(h.disc(0, 0, 200.0), **filled)], aoi=AOI))  # backfill: rebuild
    names = ", ".join(filled)
    with engine.connect() as conn:
        lakes = conn.execute(sa.text(f"SELECT area_m2, {names} FROM {SCHEMA}.lake ORDER BY area_m2")).all()
        versions = conn.execute(
            sa.text(f"SELECT {names} FROM {SCHEMA}.lake_changes WHERE area_m2 > 50000 ORDER BY valid_from")
        ).all()
    assert tuple(lakes[0][1:]) == (None,) * len(filled)  # unknown stays NULL
    assert tuple(lakes[1][1:]) == tuple(2 * v for v in filled.values())
    assert [tuple(v) for v in versions] == [tuple(filled.values()), tuple(2 * v for v in filled.values())]
    exported = queries.lakes_as_of(engine, aoi=AOI).sort_values("area_m2")
    assert list(exported.iloc[1][list(filled)]) == [2 * v for v in filled.values()]
    assert stale_histories(engine, AOI) == []
