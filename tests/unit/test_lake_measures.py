"""Per-lake measures in metres (UTM): smoothed perimeter, area error, slope ring, entropy, volume."""

from __future__ import annotations

import math

import numpy as np
import pytest
from shapely.geometry import Polygon, box, shape

from db.volume import VOLUME_CROSS_CHECK, VOLUME_RELATION
from tasks.attribute import attribute_lakes
from tasks.grid import GridSpec
from tasks.lake_measures import (
    area_uncertainty,
    lake_volume,
    probability_entropy,
    smoothed_perimeter,
    surrounding_slope,
)
from tasks.vectorize import mask_to_polygons

PIXEL = 10.0


def _grid(n: int) -> GridSpec:
    return GridSpec(32643, (PIXEL, 0.0, 640_000.0, 0.0, -PIXEL, 4_770_000.0), n, n)


def _disc_outline(radius_px: int) -> tuple[Polygon, float]:
    """A disc rasterised on a 10 m grid (pixel-centre rule), traced along pixel edges; its true radius in m."""
    n = 2 * radius_px + 10
    grid = _grid(n)
    rows, cols = np.mgrid[0:n, 0:n]
    mask = (cols + 0.5 - n / 2) ** 2 + (rows + 0.5 - n / 2) ** 2 <= radius_px**2
    (poly,) = mask_to_polygons(mask, grid, min_area_m2=0.0)
    assert isinstance(poly, Polygon)
    return poly, radius_px * PIXEL


@pytest.mark.parametrize("radius_px", [5, 10, 30, 100])
def test_smoothed_perimeter_of_a_rasterised_disc_is_its_circumference(radius_px: int) -> None:
    """The pixel staircase of a disc is 4/π too long; the corner-cut outline is within 2.5 % of 2πr."""
    poly, r = _disc_outline(radius_px)
    circumference = 2 * math.pi * r
    assert poly.length / circumference == pytest.approx(4 / math.pi, rel=0.03)
    assert smoothed_perimeter(poly, PIXEL) == pytest.approx(circumference, rel=0.025)


def test_smoothed_perimeter_keeps_straight_shores_and_counts_islands() -> None:
    """A 1 km square loses only its corners (< 1 %); a hole (island) adds its shore."""
    square = box(0, 0, 1000, 1000)
    assert smoothed_perimeter(square, PIXEL) == pytest.approx(4000, rel=0.01)
    assert smoothed_perimeter(square, PIXEL) < 4000
    with_island = Polygon(square.exterior.coords, [box(400, 400, 600, 600).exterior.coords])
    island = smoothed_perimeter(with_island, PIXEL) - smoothed_perimeter(square, PIXEL)
    assert island == pytest.approx(800, rel=0.03)
    # Extra vertices along a straight run (a repair may add them) change nothing.
    dense = Polygon([(0, 0), (500, 0), (1000, 0), (1000, 1000), (0, 1000)])
    assert smoothed_perimeter(dense, PIXEL) == pytest.approx(smoothed_perimeter(square, PIXEL))
    with pytest.raises(ValueError, match="pixel size"):
        smoothed_perimeter(square, 0.0)


def test_area_uncertainty_is_half_a_pixel_around_the_pixel_outline() -> None:
    """10 × 10 pixels: 400 m of staircase × 5 m = ±2000 m² (a fifth of the 10 000 m²)."""
    assert area_uncertainty(box(0, 0, 100, 100), PIXEL) == pytest.approx(2000.0)
    poly, _ = _disc_outline(30)
    assert area_uncertainty(poly, PIXEL) == pytest.approx(0.5 * PIXEL * poly.length)


def test_surrounding_slope_is_the_ring_mean_in_degrees() -> None:
    """A plane tilted 20° reads 20°; a lake in a flat basin whose walls start beyond the 200 m ring reads ~0."""
    n = 120
    grid = _grid(n)
    x = (np.arange(n) + 0.5) * PIXEL
    plane = np.tile(x * math.tan(math.radians(20)), (n, 1))
    lake = box(640_500, 4_769_500, 640_700, 4_769_300)  # 20 × 20 pixels in the middle
    assert surrounding_slope(lake, plane, grid) == pytest.approx(20.0, abs=1e-6)
    # Basin: flat within 350 m of the grid centre, 45° walls outside.
    cols, rows = np.meshgrid(x, x)
    dist = np.hypot(cols - 600, rows - 600)
    basin = np.where(dist < 350, 0.0, dist - 350)
    centre = box(640_550, 4_769_450, 640_650, 4_769_350)  # 100 m square: ring reaches 250 m from the centre
    assert surrounding_slope(centre, basin, grid) == pytest.approx(0.0, abs=0.5)
    wide = surrounding_slope(centre, basin, grid, ring_m=400.0)
    assert wide is not None and wide > 5.0
    assert surrounding_slope(lake, np.full((n, n), np.nan), grid) is None
    with pytest.raises(ValueError, match="must match the grid"):
        surrounding_slope(lake, plane[:10], grid)


def test_probability_entropy_bits() -> None:
    """0 where the model is certain, 1 at p = 0.5; NaN pixels left out; NaN when none is left."""
    inside = np.ones((2, 2), dtype=bool)
    assert probability_entropy(np.full((2, 2), 0.5), inside) == pytest.approx(1.0)
    assert probability_entropy(np.array([[1.0, 0.0], [1.0, 1.0]]), inside) == pytest.approx(0.0)
    h09 = -(0.9 * math.log2(0.9) + 0.1 * math.log2(0.1))
    mixed = np.array([[0.9, 0.5], [np.nan, 0.9]])
    assert probability_entropy(mixed, inside) == pytest.approx((2 * h09 + 1.0) / 3)
    assert probability_entropy(mixed, np.array([[True, False], [False, False]])) == pytest.approx(h09)
    assert math.isnan(probability_entropy(np.full((2, 2), np.nan), inside))


def test_lake_volume_units_and_uncertainty() -> None:
    """Cook & Quincey (2015) with A in m², V in m³: 1 km² holds ~3·10⁷ m³ (31 m mean depth, not 170 m)."""
    volume, unknown = lake_volume(1e6)
    assert volume == pytest.approx(0.1697 * 1e6**1.3778)
    assert 10 < volume / 1e6 < 50 and unknown is None  # mean depth in m; no area error, no volume error
    area_error = 0.5 * PIXEL * 4000  # a 1 km square's half-pixel band
    _, sigma = lake_volume(1e6, area_error)
    from_area = VOLUME_RELATION.exponent * volume * area_error / 1e6
    spread = abs(volume - VOLUME_CROSS_CHECK.coefficient * 1e6**VOLUME_CROSS_CHECK.exponent)
    assert sigma == pytest.approx(math.hypot(from_area, spread))
    assert sigma is not None and max(from_area, spread) < sigma < volume
    assert lake_volume(2e6)[0] > 2 * volume  # super-linear: bigger lakes are deeper
    with pytest.raises(ValueError, match="area"):
        lake_volume(-1.0)


def test_attribute_lakes_fills_every_measure() -> None:
    """The scene attribution carries the new measures for a pipeline lake (no None but where unknown)."""
    n = 60
    grid = _grid(n)
    mask = np.zeros((n, n), dtype=bool)
    rows, cols = np.mgrid[0:n, 0:n]
    mask[(cols - 30) ** 2 + (rows - 30) ** 2 <= 12**2] = True
    prob = np.where(mask, 0.9, 0.05)
    dem = np.tile((np.arange(n) * PIXEL * math.tan(math.radians(10))), (n, 1))
    (lake,) = attribute_lakes(mask_to_polygons(mask, grid, min_area_m2=0.0), prob, dem, grid)
    poly = shape(lake.geometry.geoms[0])
    assert lake.perimeter_smoothed_m == pytest.approx(2 * math.pi * 120, rel=0.03)
    assert lake.perimeter_smoothed_m < lake.perimeter_m
    assert lake.area_uncertainty_m2 == pytest.approx(0.5 * PIXEL * poly.length)
    assert lake.surrounding_slope_deg == pytest.approx(10.0, abs=0.01)
    h09 = -(0.9 * math.log2(0.9) + 0.1 * math.log2(0.1))
    assert lake.probability_entropy == pytest.approx(h09)
    volume, sigma = lake_volume(lake.area_m2, lake.area_uncertainty_m2)
    assert (lake.volume_m3, lake.volume_uncertainty_m3) == (volume, sigma)


def test_the_attribute_window_holds_the_slope_ring() -> None:
    """A lake's window (tasks.attribute) must hold its surrounding-slope ring and the gradient's pixel."""
    from tasks.attribute import ATTRIBUTE_HALO_PX
    from tasks.lake_measures import SLOPE_RING_M

    pixel_m = 10.0  # the scene grid's pixel (tasks.grid)
    assert ATTRIBUTE_HALO_PX * pixel_m >= SLOPE_RING_M + pixel_m
