"""The observation validity policy (tasks.validity): which pixels count as seen, and for what.

Pure rules first, then the S2 reader's use of them (no SCL, snow, no baseline), the stack's
dry-capable sidecar, and ``extract_lakes``'s footprint judged by the merge's own absence rule
(``db.identity.absent_lakes`` with the default ``MergeConfig``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

from db.identity import absent_lakes
from db.records import MergeConfig
from tasks.grid import GridSpec
from tasks.preprocess import S2_BANDS, S2Scene, decide_s2_offset, read_s2
from tasks.scene import extract_lakes
from tasks.stack import StackReader, stack_arrays, write_stack
from tasks.validity import (
    CLOUD_STATE_UNKNOWN,
    SNOW_ICE_SCL_CLASSES,
    cloud_state_of,
    dry_capable,
    dry_capable_before_water,
    s2_validity,
)

EPSG = 32643
X0, Y0 = 600_000.0, 4_800_000.0
GRID = GridSpec(EPSG, (10.0, 0.0, X0, 0.0, -10.0, Y0), 64, 64)
MIN_AREA_M2 = 5000.0


def _write(path: Path, data: np.ndarray, res: float, nodata: float | None = None) -> str:
    profile = {
        "driver": "GTiff",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": f"EPSG:{EPSG}",
        "transform": Affine(res, 0.0, X0, 0.0, -res, Y0),
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data[np.newaxis])
    return str(path)


# --- the pure rules --------------------------------------------------------------------------


def test_no_scl_means_unknown_cloud_state_never_clear_sky() -> None:
    data = np.ones((4, 4), dtype=bool)
    data[0, 0] = False
    v = s2_validity(data, None)
    assert v.cloud_state == CLOUD_STATE_UNKNOWN and math.isnan(v.cloud_fraction)
    assert v.snow_ice is None
    np.testing.assert_array_equal(v.clear, data)  # the model may read every pixel with data
    assert dry_capable_before_water(v.clear, v.snow_ice) is None, "no place of the scene can be seen dry"
    assert dry_capable(None, np.zeros((4, 4), bool), np.zeros((4, 4), np.float32)) is None


def test_snow_is_valid_data_but_never_dry_capable() -> None:
    scl = np.full((4, 4), 5, dtype=np.uint8)
    scl[0, :] = 11  # snow / ice
    scl[1, :2] = 9  # cloud high probability
    scl[2, 0] = 0  # no data
    data = np.ones((4, 4), dtype=bool)
    v = s2_validity(data, scl)
    assert v.cloud_state == "scl" and v.cloud_fraction == pytest.approx(2 / 15)
    assert v.clear[0].all(), "snow is valid data for the model"
    assert not v.clear[1, :2].any() and not v.clear[2, 0]
    assert v.snow_ice is not None and v.snow_ice[0].all() and v.snow_ice.sum() == 4
    before = dry_capable_before_water(v.clear, v.snow_ice)
    assert before is not None
    assert not before[0].any(), "snow/ice is not observed for a lake"
    assert before[3].all() and before.sum() == 16 - 4 - 2 - 1
    assert SNOW_ICE_SCL_CLASSES == {11}


def test_water_and_its_one_pixel_ring_and_missing_probability_are_not_dry_capable() -> None:
    before = np.ones((9, 9), dtype=bool)
    water = np.zeros((9, 9), dtype=bool)
    water[4, 4] = True  # one water pixel: far below any mapping unit
    prob = np.full((9, 9), 0.1, dtype=np.float32)
    prob[0, 8] = np.nan
    out = dry_capable(before, water, prob)
    assert out is not None
    assert not out[3:6, 3:6].any(), "the water pixel and its 8 neighbours are cut out"
    assert out[2, 2] and out[6, 6] and out[4, 2]
    assert not out[0, 8], "no probability: not looked at"
    assert out.sum() == 81 - 9 - 1


def test_cloud_state_of_a_recorded_fraction() -> None:
    assert cloud_state_of(float("nan")) == "unknown"
    assert cloud_state_of(0.0) == cloud_state_of(1.0) == "scl"


# --- the offset decision ---------------------------------------------------------------------


def _bands(offset: int, rng: np.random.Generator) -> list[np.ndarray]:
    """12 bands of harmonised dark-and-bright ground (reflectance × 10 000) plus ``offset`` DN."""
    base = rng.uniform(50, 3000, (12, 40, 40)) + offset
    return [b.astype(np.float32) for b in base]


def test_the_baseline_decides_when_the_item_states_one() -> None:
    dark = _bands(0, np.random.default_rng(0))
    decision = decide_s2_offset("05.09", dark)  # the baseline wins, whatever the pixels look like
    assert (decision.dn, decision.source) == (1000, "baseline") and "05.09" in decision.evidence
    assert decide_s2_offset("02.14", dark).dn == 0


@pytest.mark.parametrize("offset", [0, 1000])
def test_the_detector_decides_without_a_baseline_and_says_why(offset: int) -> None:
    decision = decide_s2_offset(None, _bands(offset, np.random.default_rng(1)), max_pixels=500)
    assert decision.source == "detector" and decision.dn == offset
    assert "p1" in decision.evidence and "DN" in decision.evidence  # the percentile evidence
    assert decision.describe().startswith(f"{offset} DN (detector: ")


def _s2_files(tmp_path: Path, offset: int) -> dict[str, str]:
    rng = np.random.default_rng(3)
    hrefs = {}
    for band in S2_BANDS:
        dn = (rng.uniform(100, 3000, (32, 32)) + offset).astype(np.uint16)
        hrefs[band] = _write(tmp_path / f"{band}.tif", dn, 10.0, nodata=0)
    return hrefs


def test_read_s2_without_a_baseline_removes_the_detected_offset(tmp_path: Path) -> None:
    """An item with no processing baseline still gets its +1000 DN removed (it used to be kept)."""
    grid = GridSpec(EPSG, (10.0, 0.0, X0, 0.0, -10.0, Y0), 32, 32)
    hrefs = _s2_files(tmp_path, 1000)
    stated = read_s2(hrefs, None, "05.09", grid)
    detected = read_s2(hrefs, None, None, grid)
    assert detected.offset is not None and detected.offset.source == "detector" and detected.offset.dn == 1000
    np.testing.assert_array_equal(detected.reflectance, stated.reflectance)
    assert float(np.nanmin(detected.reflectance)) < 1000  # harmonised: dark pixels are dark


# --- the stack's sidecar and extract_lakes's footprint ---------------------------------------


def _cell(r0: int, r1: int, c0: int, c1: int):
    """Outline of grid rows [r0, r1) × cols [c0, c1) in UTM metres."""
    return box(X0 + 10 * c0, Y0 - 10 * r1, X0 + 10 * c1, Y0 - 10 * r0)


KNOWN = {
    1: _cell(5, 15, 5, 15),  # dry, clear: seen dry
    2: _cell(5, 15, 30, 40),  # dry under snow (SCL 11): not observed
    3: _cell(30, 45, 5, 20),  # shrank to a 4 × 4 px puddle (0.16 ha < 0.5 ha): not dry
    4: _cell(30, 40, 40, 50),  # still water, 1 ha: mapped
    5: _cell(50, 60, 30, 40),  # under cloud: not observed
}


def _scene(tmp_path: Path, *, scl_known: bool):
    h, w = GRID.shape
    refl = np.full((12, h, w), 1500.0, dtype=np.float32)
    clear = np.ones((h, w), dtype=bool)
    clear[48:62, 28:42] = False  # cloud over lake 5
    snow = np.zeros((h, w), dtype=bool)
    snow[3:17, 28:42] = True  # snow over lake 2
    s2 = S2Scene(refl, clear, 0.05 if scl_known else math.nan, snow if scl_known else None)
    s1 = np.full((2, h, w), -15.0, dtype=np.float32)
    dem = np.full((h, w), 4000.0, dtype=np.float32)
    stack, valid = stack_arrays(s2, s1, dem)
    info = write_stack(
        stack,
        valid,
        GRID,
        tmp_path,
        "scene",
        cloud_fraction=s2.cloud_fraction,
        dry_capable=dry_capable_before_water(valid, s2.snow_ice),
    )
    prob = np.full((h, w), 0.05, dtype=np.float32)
    prob[~valid] = np.nan  # the segmenters' nodata outside valid
    prob[36:40, 10:14] = 0.9  # the puddle in lake 3
    prob[30:40, 40:50] = 0.9  # lake 4
    path = Path(_write(tmp_path / "probability.tif", prob, 10.0, nodata=float("nan")))
    return info, path


def test_dry_capable_sidecar_round_trip_and_absence(tmp_path: Path) -> None:
    info, _ = _scene(tmp_path / "known", scl_known=True)
    assert info.dry_capable_path is not None and info.dry_capable_path.is_file()
    with StackReader(info) as reader:
        mask = reader.read_dry_capable()
    with StackReader(info.path) as by_path:  # found through the stack's tag as well
        again = by_path.read_dry_capable()
    assert mask is not None and again is not None
    np.testing.assert_array_equal(mask, again)
    assert not mask[3:17, 28:42].any() and not mask[48:62, 28:42].any() and mask[0, 0]

    unknown, _ = _scene(tmp_path / "unknown", scl_known=False)
    assert unknown.dry_capable_path is None
    assert not list((tmp_path / "unknown").glob("*drycapable*"))
    with StackReader(unknown) as reader:
        assert reader.read_dry_capable() is None


def test_extract_lakes_footprint_marks_absent_only_what_was_seen_dry(tmp_path: Path) -> None:
    """Judged by the merge's own rule: dry → absent; snow, sub-MMU water, cloud → not; no SCL → nothing."""
    info, prob = _scene(tmp_path, scl_known=True)
    out = extract_lakes(info, prob, 0.5, MIN_AREA_M2)
    assert len(out.lakes) == 1 and out.lakes[0].area_m2 == pytest.approx(10_000.0)  # the puddle is dropped
    assert out.footprint is not None
    unseen = {i: g for i, g in KNOWN.items() if i != 4}  # lake 4 was matched by its polygon
    absent = absent_lakes(unseen, out.footprint, MergeConfig().min_footprint_cover)
    assert absent == [1], absent
    assert not out.footprint.intersects(_cell(36, 40, 10, 14)), "the puddle itself is not seen dry"

    blind, blind_prob = _scene(tmp_path / "no-scl", scl_known=False)
    no_scl = extract_lakes(blind, blind_prob, 0.5, MIN_AREA_M2)
    assert no_scl.footprint is None, "unknown cloud state: no lake can be marked absent"
    assert [lk.area_m2 for lk in no_scl.lakes] == [lk.area_m2 for lk in out.lakes], "lakes are still mapped"


def test_real_items_without_a_baseline_go_to_the_detector(realdata: Path) -> None:
    """Earth Search v0 L2A items state no processing baseline: the pixels decide, never "no offset".

    The real TerraMesh L2A chip (which carries the +1000 DN) stands in for such an item's pixels;
    a CDSE item states its baseline (``processing:version``), which decides.
    """
    import pystac

    from tasks.sources import item_to_acquisition

    items = realdata / "stac_items"
    v0 = item_to_acquisition(pystac.Item.from_file(str(items / "S2A_28QCH_20200714_0_L2A.json")), "S2L2A", "v0")
    assert v0.processing_baseline is None
    with rasterio.open(realdata / "terramesh_sample" / "433D_629L_3_1_S2L2A.tif") as ds:
        dn = list(ds.read().astype(np.float32))
    decision = decide_s2_offset(v0.processing_baseline, dn)
    assert (decision.dn, decision.source) == (1000, "detector") and "p1" in decision.evidence
    cdse = "S2C_MSIL2A_20250330T100051_N0511_R122_T33UWP_20250330T145914_cdse_stac_v110_trimmed.json"
    stated = item_to_acquisition(pystac.Item.from_file(str(items / cdse)), "S2L2A", "cdse")
    assert decide_s2_offset(stated.processing_baseline, dn) == decide_s2_offset("05.11", dn)
    assert decide_s2_offset(stated.processing_baseline, dn).source == "baseline"
