"""Mask → polygons: exact round trip, minimum mapped area, holes, nodata."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from rasterio.features import rasterize
from shapely.geometry import MultiPolygon, Polygon

from tasks.grid import GridSpec
from tasks.vectorize import mask_to_polygons, probability_to_mask

GRID = GridSpec(32644, (10.0, 0.0, 300_000.0, 0.0, -10.0, 3_300_000.0), 64, 48)


def _rasterise(polys, grid: GridSpec = GRID) -> np.ndarray:
    if not polys:
        return np.zeros(grid.shape, dtype=bool)
    return rasterize([(p, 1) for p in polys], out_shape=grid.shape, transform=grid.affine).astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def _shapes() -> dict[str, np.ndarray]:
    rows, cols = np.indices(GRID.shape)
    square = (rows >= 5) & (rows < 15) & (cols >= 5) & (cols < 15)
    ell = ((rows >= 20) & (rows < 40) & (cols >= 5) & (cols < 10)) | (
        (rows >= 35) & (rows < 40) & (cols >= 5) & (cols < 25)
    )
    ring = ((rows - 12) ** 2 + (cols - 45) ** 2 <= 81) & ((rows - 12) ** 2 + (cols - 45) ** 2 > 9)
    blob = (rows - 35) ** 2 / 36 + (cols - 48) ** 2 / 144 + 0.3 * np.sin(cols) <= 1
    return {"square": square, "L": ell, "ring": ring, "blob": blob}


@pytest.mark.parametrize("name", ["square", "L", "ring", "blob", "all"])
def test_round_trip_iou(name):
    """Mask → polygons → rasterise reproduces the mask.

    (IoU ≥ 0.99, area exact) on several shapes
    """
    shapes = _shapes()
    mask = np.logical_or.reduce(list(shapes.values())) if name == "all" else shapes[name]
    polys = mask_to_polygons(mask, GRID, min_area_m2=0.0)
    assert all(p.is_valid for p in polys)
    assert _iou(_rasterise(polys), mask) >= 0.99
    # Outlines follow pixel edges: total area is exactly the pixel count × 100 m².
    assert sum(p.area for p in polys) == pytest.approx(mask.sum() * 100.0)


def test_holes_are_kept():
    """Islands stay holes in the lake polygon."""
    ring = _shapes()["ring"]
    (poly,) = mask_to_polygons(ring, GRID, min_area_m2=0.0)
    assert isinstance(poly, Polygon) and len(poly.interiors) == 1
    assert poly.area == pytest.approx(ring.sum() * 100.0)
    cx, cy = GRID.affine @ (45.5, 12.5)
    assert not poly.contains(Polygon.from_bounds(cx - 1, cy - 1, cx + 1, cy + 1))


def test_small_polygons_are_dropped():
    """Lakes under 0.5 ha are dropped, 0.5 ha and larger kept."""
    mask = np.zeros(GRID.shape, dtype=bool)
    mask[2:9, 2:9] = True  # 49 px = 4900 m²: below 0.5 ha
    mask[20:30, 20:25] = True  # 50 px = 5000 m²: kept
    mask[35:45, 40:50] = True  # 100 px
    polys = mask_to_polygons(mask, GRID)
    assert sorted(round(p.area) for p in polys) == [5000, 10000]
    assert len(mask_to_polygons(mask, GRID, min_area_m2=0.0)) == 3


def test_four_connectivity_splits_diagonal_contacts():
    """Pixels touching only at a corner form separate, valid lakes (4-connectivity)."""
    mask = np.zeros(GRID.shape, dtype=bool)
    mask[10:20, 10:20] = True
    mask[20:30, 20:30] = True  # touches the first only at a corner
    polys = mask_to_polygons(mask, GRID, min_area_m2=0.0)
    assert len(polys) == 2 and all(p.is_valid for p in polys)


def test_polygons_are_in_the_grid_crs():
    """Polygons are in the grid's UTM metres at the mask's place."""
    mask = np.zeros(GRID.shape, dtype=bool)
    mask[0:10, 54:64] = True  # the grid's north-east corner
    (poly,) = mask_to_polygons(mask, GRID)
    _left, _bottom, right, top = GRID.bounds
    assert poly.bounds == pytest.approx((right - 100, top - 100, right, top))


def test_probability_threshold_and_nodata():
    """Water is prob > threshold; NaN is never water."""
    prob = np.array([[0.2, 0.5, 0.51], [np.nan, 0.9, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(probability_to_mask(prob), [[False, False, True], [False, True, True]])
    np.testing.assert_array_equal(probability_to_mask(prob, 0.95), [[0, 0, 0], [0, 0, 1]])


def test_water_outside_valid_is_ignored():
    """Water outside the valid mask is not vectorised; wrong shapes are refused."""
    mask = np.zeros(GRID.shape, dtype=bool)
    mask[10:30, 10:30] = True
    valid = np.ones(GRID.shape, dtype=bool)
    valid[:, 20:] = False
    (poly,) = mask_to_polygons(mask, GRID, valid=valid)
    assert poly.area == pytest.approx(200 * 100.0)
    assert mask_to_polygons(np.zeros(GRID.shape, dtype=bool), GRID) == []
    with pytest.raises(ValueError, match="grid"):
        mask_to_polygons(mask[:-1], GRID)


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, (12, 16), elements=st.booleans()))
def test_round_trip_property(mask):
    """Any mask, however ragged (diagonal contacts, one-pixel holes), vectorises exactly."""
    grid = GridSpec(32633, (10.0, 0.0, 400_000.0, 0.0, -10.0, 5_000_000.0), 16, 12)
    polys = mask_to_polygons(mask, grid, min_area_m2=0.0)
    assert all(p.is_valid and isinstance(p, Polygon | MultiPolygon) for p in polys)
    assert _iou(_rasterise(polys, grid), mask) >= 0.99
