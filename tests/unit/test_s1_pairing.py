"""Pairing keeps GRD σ⁰ and RTC γ⁰ apart: one S1 kind per AOI, RTC preferred, the kind recorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pystac
import pytest
from shapely.geometry import box

from core.errors import SettingsError
from tasks.pairing import choose_s1_kind, pair_scenes, scene_key
from tasks.sar import declared_radiometry
from tasks.sources import Acquisition, item_to_acquisition

AOI = box(77.0, 43.0, 77.1, 43.1)
T0 = datetime(2024, 7, 4, 5, 56, tzinfo=UTC)


def acq(pid: str, kind: str, when: datetime) -> Acquisition:
    return Acquisition(pid, kind, "x", when, AOI.buffer(0.1), (("data", f"/{pid}.tif"),), "local:test")


DEM = acq("DEM", "DEM", T0)


def test_rtc_is_preferred_and_grd_never_mixed_in() -> None:
    """With RTC in the catalog every scene uses RTC; a scene with only GRD in reach is skipped, saying why.

    The GRD acquisition is closer in time to both S2 scenes: a kind-blind pairing would take it.
    """
    items = [
        acq("S2-a", "S2L2A", T0),
        acq("S2-b", "S2L2A", T0 + timedelta(days=30)),
        acq("GRD-a", "S1GRD", T0 + timedelta(hours=6)),
        acq("RTC-a", "S1RTC", T0 + timedelta(days=3)),
        acq("GRD-b", "S1GRD", T0 + timedelta(days=30, hours=1)),
        DEM,
    ]
    plans, skipped = pair_scenes(items, AOI)
    assert [(p.s2.product_id, p.s1.product_id, p.s1_kind) for p in plans] == [("S2-a", "RTC-a", "S1RTC")]
    assert [s.product_id for s in skipped] == ["S2-b"]
    reason = skipped[0].reason
    assert "no S1RTC within 7 days" in reason and "GRD-b (S1GRD)" in reason and "not mixed" in reason


def test_grd_only_catalog_pairs_grd_and_the_kind_can_be_asked_for() -> None:
    """Without RTC the AOI uses GRD; asking for S1GRD explicitly pairs GRD even where RTC exists."""
    grd_only = [acq("S2", "S2L2A", T0), acq("GRD", "S1GRD", T0), DEM]
    assert choose_s1_kind(grd_only) == "S1GRD"
    (plan,), _ = pair_scenes(grd_only, AOI)
    assert plan.s1_kind == "S1GRD"
    both = [*grd_only, acq("RTC", "S1RTC", T0 + timedelta(days=1))]
    (plan,), _ = pair_scenes(both, AOI, s1_kind="S1GRD")
    assert plan.s1.product_id == "GRD"
    with pytest.raises(SettingsError, match="S1 kind must be one of S1RTC, S1GRD"):
        pair_scenes(both, AOI, s1_kind="S1SLC")


def test_grd_and_rtc_products_are_different_scenes() -> None:
    """The ledger tells the kinds apart by product (id and fingerprint), not by a label of its own."""
    (grd,), _ = pair_scenes([acq("S2", "S2L2A", T0), acq("S1-GRD", "S1GRD", T0), DEM], AOI)
    (rtc,), _ = pair_scenes([acq("S2", "S2L2A", T0), acq("S1-RTC", "S1RTC", T0), DEM], AOI)
    assert scene_key(grd, "m", {}) != scene_key(rtc, "m", {})


def test_real_pc_grd_item_carries_its_calibration_and_says_amplitude(realdata: Path) -> None:
    """Planetary Computer's sentinel-1-grd item: LUT and annotation hrefs found, DN recognised."""
    items = json.loads((realdata / "stac_items" / "sentinel-1-grd-pc-farmvibes_sample_pc_output.json").read_text())
    item = pystac.Item.from_dict(items[0])
    a = item_to_acquisition(item, "S1GRD", "stac:test")
    assets = a.asset_map
    assert assets["calibration-vv"].endswith("/annotation/calibration/calibration-iw-vv.xml")
    assert assets["annotation-vh"].endswith("/annotation/iw-vh.xml")
    assert declared_radiometry(dict(a.metadata), "vv")[1] == "dn"
