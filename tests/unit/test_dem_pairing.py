"""DEM choice of the pairing: the tiles whose union covers the AOI (real GLO-30 items and synthetic ones)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pystac
from shapely.geometry import box

from tasks.pairing import pair_scenes, params_hash, scene_key
from tasks.sources import Acquisition, item_to_acquisition

T0 = datetime(2024, 7, 4, 5, 56, tzinfo=UTC)


def acq(pid: str, kind: str, footprint, fingerprint: str = "") -> Acquisition:
    return Acquisition(pid, kind, "x", T0, footprint, (("data", f"/{pid}.tif"),), "local:test", fingerprint=fingerprint)


def _plans(dems: list[Acquisition], aoi):
    near = aoi.buffer(0.5)
    return pair_scenes([acq("S2", "S2L2A", near), acq("S1", "S1GRD", near), *dems], aoi)


def _glo30(realdata: Path) -> list[Acquisition]:
    """The four real Planetary Computer GLO-30 items (1° tiles at 89–90° S, 180–176° W)."""
    items = json.loads((realdata / "stac_items" / "cop-dem-glo-30-pc.json").read_text())
    return [item_to_acquisition(pystac.Item.from_dict(d), "DEM", "stac:pc") for d in items]


def test_aoi_across_a_real_tile_edge_gets_both_tiles(realdata: Path) -> None:
    """An AOI across the W180/W179 edge: both tiles, sorted, and dem_id joins them with '+'."""
    tiles = _glo30(realdata)
    aoi = box(-179.3, -89.8, -178.7, -89.3)
    (plan,), skipped = _plans(list(reversed(tiles)), aoi)
    assert skipped == []
    assert [d.product_id for d in plan.dems] == [
        "Copernicus_DSM_COG_10_S90_00_W179_00_DEM",
        "Copernicus_DSM_COG_10_S90_00_W180_00_DEM",
    ]
    assert plan.dem_id == "Copernicus_DSM_COG_10_S90_00_W179_00_DEM+Copernicus_DSM_COG_10_S90_00_W180_00_DEM"
    assert all(h.endswith(".tif") and h.startswith("https://") for h in plan.dem_hrefs)


def test_aoi_over_four_real_tiles_and_one_beyond_them(realdata: Path) -> None:
    tiles = _glo30(realdata)
    (plan,), _ = _plans(tiles, box(-179.9, -89.9, -176.1, -89.1))
    assert len(plan.dems) == 4 and plan.dem_id.count("+") == 3
    # Past W176 there is no tile in the catalog: the union falls short, the scene is skipped.
    plans, skipped = _plans(tiles, box(-179.9, -89.9, -175.5, -89.1))
    assert plans == [] and skipped[0].reason == "no DEM covering the AOI"


def test_aoi_inside_one_real_tile_gets_that_tile_alone(realdata: Path) -> None:
    (plan,), _ = _plans(_glo30(realdata), box(-178.8, -89.8, -178.2, -89.2))
    assert plan.dem_id == "Copernicus_DSM_COG_10_S90_00_W179_00_DEM"


def test_redundant_and_duplicate_tiles_are_left_out_deterministically() -> None:
    """A tile the others make redundant is dropped; equal candidates resolve to the smaller id."""
    aoi = box(0.2, 0.2, 1.8, 0.8)
    west, east = acq("T-west", "DEM", box(0, 0, 1, 1)), acq("T-east", "DEM", box(1, 0, 2, 1))
    sliver = acq("T-a-sliver", "DEM", box(0.9, 0, 1.1, 1))  # inside the union of the other two
    twin = acq("T-west-copy", "DEM", box(0, 0, 1, 1))
    for order in ([west, east, sliver, twin], [twin, sliver, east, west]):
        (plan,), _ = _plans(order, aoi)
        assert [d.product_id for d in plan.dems] == ["T-east", "T-west"]


def test_a_union_with_a_hole_is_not_enough() -> None:
    aoi = box(0.2, 0.2, 1.8, 0.8)
    plans, skipped = _plans([acq("W", "DEM", box(0, 0, 0.99, 1)), acq("E", "DEM", box(1.01, 0, 2, 1))], aoi)
    assert plans == [] and skipped[0].reason == "no DEM covering the AOI"


def test_scene_key_covers_every_tile_and_keeps_single_tile_keys() -> None:
    aoi = box(0.2, 0.2, 1.8, 0.8)
    west = acq("T-west", "DEM", box(0, 0, 1, 1), "fw")
    east = acq("T-east", "DEM", box(1, 0, 2, 1), "fe")
    (plan,), _ = _plans([west, east], aoi)
    key = scene_key(plan, "m1", {"t": 0.5})
    (replaced,), _ = _plans([west, acq("T-east", "DEM", box(1, 0, 2, 1), "fe-new")], aoi)
    assert scene_key(replaced, "m1", {"t": 0.5}) != key, "a replaced tile makes a new key"
    (other,), _ = _plans([west, acq("T-east2", "DEM", box(1, 0, 2, 1), "fe")], aoi)
    assert scene_key(other, "m1", {"t": 0.5}) != key, "another tile id makes a new key"

    # One tile: the payload is the one single-DEM plans always had, so existing keys stand.
    near = box(0, 0, 1, 1)
    (single,), _ = _plans([acq("DEM", "DEM", near, "fd")], box(0.2, 0.2, 0.8, 0.8))
    legacy = {
        "s2": "S2",
        "s1": "S1",
        "dem": "DEM",
        "inputs": ["", "", "fd"],
        "model": "m1",
        "params": params_hash({"t": 0.5}),
    }
    expected = hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()
    assert scene_key(single, "m1", {"t": 0.5}) == expected
