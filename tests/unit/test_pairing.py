"""Pairing S2 with S1 (≤ 7 days) and the DEM; scene keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shapely.geometry import box

from tasks.pairing import pair_scenes, scene_key
from tasks.sources import Acquisition

AOI = box(77.0, 43.0, 77.1, 43.1)
T0 = datetime(2024, 7, 4, 5, 56, tzinfo=UTC)


NEAR_AOI = AOI.buffer(0.1)


def acq(pid: str, kind: str, when: datetime, footprint=NEAR_AOI) -> Acquisition:
    return Acquisition(pid, kind, "x", when, footprint, (("data", f"/{pid}.tif"),), "local:test")


def test_nearest_s1_within_limit_is_paired_and_far_one_skipped() -> None:
    """Each S2 gets the closest S1 inside 7 days; an S2 with none is skipped with the reason."""
    items = [
        acq("S2-a", "S2L2A", T0),
        acq("S2-b", "S2L2A", T0 + timedelta(days=40)),
        acq("S1-far", "S1GRD", T0 + timedelta(days=6)),
        acq("S1-near", "S1GRD", T0 + timedelta(days=2)),
        acq("S1-late", "S1GRD", T0 + timedelta(days=48)),
        acq("DEM", "DEM", datetime(2021, 4, 22, tzinfo=UTC)),
    ]
    plans, skipped = pair_scenes(items, AOI)
    assert [(p.s2.product_id, p.s1.product_id) for p in plans] == [("S2-a", "S1-near")]
    assert [(s.product_id, s.reason) for s in skipped] == [("S2-b", "no S1 within 7 days")]


def test_missing_dem_skips_with_reason() -> None:
    items = [acq("S2", "S2L2A", T0), acq("S1", "S1GRD", T0), acq("DEM", "DEM", T0, box(0, 0, 1, 1))]
    plans, skipped = pair_scenes(items, AOI)
    assert plans == [] and skipped[0].reason == "no DEM covering the AOI"


def test_time_tie_prefers_better_coverage() -> None:
    items = [
        acq("S2", "S2L2A", T0),
        acq("S1-part", "S1GRD", T0 + timedelta(days=1), box(77.0, 43.0, 77.05, 43.1)),
        acq("S1-full", "S1GRD", T0 - timedelta(days=1)),
        acq("DEM", "DEM", T0),
    ]
    plans, _ = pair_scenes(items, AOI)
    assert plans[0].s1.product_id == "S1-full"


def test_scene_key_changes_with_model_and_params_only() -> None:
    items = [acq("S2", "S2L2A", T0), acq("S1", "S1GRD", T0), acq("DEM", "DEM", T0)]
    (plan,), _ = pair_scenes(items, AOI)
    k = scene_key(plan, "m1", {"threshold": 0.5})
    assert k == scene_key(plan, "m1", {"threshold": 0.5})
    assert k != scene_key(plan, "m2", {"threshold": 0.5})
    assert k != scene_key(plan, "m1", {"threshold": 0.6})
