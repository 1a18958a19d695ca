"""Spectral baseline: finds lake water; rejects snow, ice, shadow, steep slopes, bright SAR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.baseline import SpectralBaseline, horizon_angle_degrees
from models.segmenter import STACK_BANDS, Segmenter
from tasks.preprocess import harmonise_s2_dn

ROOT = Path(__file__).resolve().parents[2]
TERRAMESH = "terramesh_sample"
REPORTS = ROOT / "tests" / "_reports"


def _spectrum(g: float, n: float, s: float) -> np.ndarray:
    """12 S2 bands (reflectance × 10 000) from B03, B08, B11; the rest interpolated plausibly."""
    return np.array([g, g, g, g, (g + n) / 2, n, n, n, n, n, s, 0.8 * s], dtype=np.float32)


# reflectance × 10 000 for B03, B08, B11, then VV dB
WATER = {
    "clear water": (700, 200, 100, -20.0),
    "turbid glacial water (wind-roughened)": (1800, 900, 250, -12.0),
}
NOT_WATER = {
    "fresh snow": (8500, 7500, 900, -12.0),
    "clean glacier ice": (4500, 3000, 300, -12.0),
    "dirty glacier ice": (2500, 2100, 400, -10.0),
    "bright cloud": (7000, 7000, 5000, -10.0),
    "rock": (1500, 2000, 2500, -9.0),
    "vegetation": (600, 3000, 1500, -11.0),
}
SHADOW = (300, 250, 150)  # dark in all bands; NDWI and MNDWI both > 0
DARK_WATER = (350, 100, 50)  # clear, deep water: also dark in all bands


def _valley(h: int = 64, w: int = 64) -> np.ndarray:
    """Flat floor at 4500 m for columns < 40, a 60° cliff to the east (17 m per 10 m pixel)."""
    cols = np.arange(w)
    row = 4500.0 + np.clip(cols - 39, 0, None) * 17.3
    return np.repeat(row[np.newaxis], h, axis=0).astype(np.float32)


def _scene(dem: np.ndarray, patches: dict[tuple[int, int], tuple]) -> np.ndarray:
    """A stack of rock with 6 × 6 patches at (row, col): (B03, B08, B11, VV)."""
    h, w = dem.shape
    stack = np.empty((len(STACK_BANDS), h, w), dtype=np.float32)
    stack[:12] = _spectrum(1500, 2000, 2500)[:, None, None]
    stack[12], stack[13], stack[14] = -9.0, -16.0, dem
    for (r, c), (g, n, s, vv) in patches.items():
        stack[:12, r : r + 6, c : c + 6] = _spectrum(g, n, s)[:, None, None]
        stack[12, r : r + 6, c : c + 6] = vv
        stack[13, r : r + 6, c : c + 6] = vv - 7
    return stack


def _centre(prob: np.ndarray, r: int, c: int) -> float:
    return float(np.mean(prob[r + 1 : r + 5, c + 1 : c + 5]))


def test_is_a_segmenter_with_a_stable_versioned_id():
    """The baseline satisfies the Segmenter protocol and its version changes with its thresholds.

    Guards against stale ledger keys.
    """
    a, b = SpectralBaseline(), SpectralBaseline()
    assert isinstance(a, Segmenter) and a.name == "spectral-baseline"
    assert a.version == b.version and a.version.startswith("spectral-baseline-v1+")
    assert SpectralBaseline(slope_max_deg=12.0).version != a.version


def test_finds_water_and_rejects_snow_ice_cloud_rock():
    """Clear and turbid lake water score high; snow, ice, cloud, rock and vegetation score low.

    Guards against the MNDWI snow confusion.
    """
    classes = {**WATER, **NOT_WATER}
    positions = [(r, c) for r in (2, 12, 22, 32, 42, 52) for c in (2, 12)]  # far from the cliff
    patches = dict(zip(positions, classes.values(), strict=False))
    stack = _scene(_valley(), patches)
    valid = np.ones(stack.shape[1:], dtype=bool)
    prob = SpectralBaseline().predict(stack, valid)
    assert prob.dtype == np.float32 and np.nanmin(prob) >= 0 and np.nanmax(prob) <= 1
    got = {name: _centre(prob, *pos) for pos, name in zip(positions, classes, strict=False)}
    for name in WATER:
        assert got[name] > 0.9, (name, got)
    for name in NOT_WATER:
        assert got[name] < 0.2, (name, got)


def test_shadow_needs_dark_sar_where_terrain_can_cast_it():
    """Dark-in-all-bands pixels next to a cliff are water only if VV is dark.

    On open flat ground (no terrain to cast a shadow) dark water needs no SAR confirmation.
    """
    g, n, s = SHADOW
    dg, dn, ds = DARK_WATER
    valley = _scene(
        _valley(),
        {(4, 30): (g, n, s, -9.0), (20, 30): (dg, dn, ds, -9.0), (36, 30): (dg, dn, ds, -20.0)},
    )
    valid = np.ones(valley.shape[1:], dtype=bool)
    assert horizon_angle_degrees(valley[14], 10.0)[6, 32] > 30
    prob = SpectralBaseline().predict(valley, valid)
    assert _centre(prob, 4, 30) < 0.2, "terrain shadow with ordinary SAR is not water"
    assert _centre(prob, 20, 30) < 0.2, "under a high horizon, dark pixels need dark SAR"
    assert _centre(prob, 36, 30) > 0.9, "dark SAR confirms dark water under a high horizon"

    flat = _scene(np.full((64, 64), 4500.0, np.float32), {(20, 30): (dg, dn, ds, -9.0)})
    assert _centre(SpectralBaseline().predict(flat, valid), 20, 30) > 0.8


def test_steep_slopes_and_bright_sar_are_not_water():
    """Water-like spectra on a 60° slope or with very bright VV are not lakes."""
    water = WATER["clear water"]
    stack = _scene(_valley(), {(10, 50): water, (30, 10): (*water[:3], -3.0)})
    prob = SpectralBaseline().predict(stack, np.ones(stack.shape[1:], dtype=bool))
    assert _centre(prob, 10, 50) < 0.05, "60° slope"
    assert _centre(prob, 30, 10) < 0.2, "VV −3 dB is layover or rough land, not a lake"


def test_shore_under_a_steep_bank_stays_water():
    """A lake pixel right under a cliff keeps its water call.

    Guards against the DEM slope of shore pixels, inflated by the bank behind them, eroding
    every lake's outline.
    """
    # Water-like spectra over columns 38–43: the floor ends at 39, the 60° cliff starts at 40.
    stack = _scene(_valley(), {(20, 38): WATER["clear water"]})
    prob = SpectralBaseline().predict(stack, np.ones(stack.shape[1:], dtype=bool))
    assert prob[21:25, 38:40].min() > 0.9
    assert prob[21:25, 41:44].max() < 0.05, "the bank itself is not water"


def test_nan_outside_valid_and_probability_is_soft():
    """Output is NaN outside valid, a soft probability inside, and malformed stacks are refused."""
    stack = _scene(_valley(), {(10, 10): WATER["turbid glacial water (wind-roughened)"]})
    valid = np.ones(stack.shape[1:], dtype=bool)
    valid[:, :5] = False
    stack[:, 0, 0] = np.nan  # nodata inside the invalid area
    prob = SpectralBaseline().predict(stack, valid)
    assert np.isnan(prob[:, :5]).all() and np.isfinite(prob[:, 5:]).all()
    inside = prob[11:15, 11:15]
    assert 0.5 < inside.min() < 1.0, "soft, not a hard 0/1"
    harder = SpectralBaseline(gain=4.0).predict(stack, valid)[11:15, 11:15]
    assert harder.min() > inside.min()
    with pytest.raises(ValueError, match="stack"):
        SpectralBaseline().predict(stack[:14], valid)


def test_terramesh_chip_against_lulc_water(realdata: Path) -> None:
    """Real S2 L2A + S1 RTC + DEM chip over a narrow, turbid, tree-lined river (EPSG:32718).

    The LULC water class is an annual product, wider than the water seen on this date, and the
    river is mostly 2–3 px wide (B11 is 20 m), so a spectral rule finds only its core: the figure
    guarded is precision (what it calls water is water) plus a modest IoU floor. The chip's DN
    have the baseline-04.00 offset (every band's minimum is about 1000).
    """
    rasterio = pytest.importorskip("rasterio")
    chips = realdata / TERRAMESH
    tile = "433D_629L_3_1"
    with rasterio.open(chips / f"{tile}_S2L2A.tif") as ds:
        dn = ds.read()
    with rasterio.open(chips / f"{tile}_S1RTC.tif") as ds:
        s1 = ds.read().astype(np.float32)
    with rasterio.open(chips / f"{tile}_DEM.tif") as ds:
        dem = ds.read(1).astype(np.float32)
    with rasterio.open(chips / f"{tile}_LULC.tif") as ds:
        lulc_water = ds.read(1) == 1
    assert dn.min(axis=(1, 2)).min() > 900, "expected offset DN (baseline ≥ 04.00)"
    refl = harmonise_s2_dn(dn, "05.00")
    stack = np.concatenate([refl, s1, dem[np.newaxis]])
    valid = np.isfinite(stack).all(axis=0)

    water = SpectralBaseline().predict(stack, valid) > 0.5
    tp = int((water & lulc_water).sum())
    iou = tp / int((water | lulc_water).sum())
    precision = tp / max(int(water.sum()), 1)
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "baseline_terramesh.json").write_text(
        json.dumps(
            {
                "chip": tile,
                "iou_vs_lulc_water": round(iou, 4),
                "precision": round(precision, 4),
                "recall": round(tp / int(lulc_water.sum()), 4),
                "predicted_px": int(water.sum()),
                "lulc_water_px": int(lulc_water.sum()),
            },
            indent=2,
        )
    )
    print(f"terramesh {tile}: IoU {iou:.3f}, precision {precision:.3f}")
    assert iou >= 0.06
    assert precision >= 0.8
