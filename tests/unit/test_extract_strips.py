"""Lake extraction streamed by strips of rows: whole lakes across strip edges, same results as whole rasters.

The strip polygoniser against ``mask_to_polygons`` (lakes across one seam, a U crossing a seam
twice, a lake over three strips, holes on a seam, diagonal contacts, the minimum area after
stitching, any mask and strip height), the strip footprint against ``valid_footprint``, and
``extract_lakes`` on real files (a stack written by ``write_stack``, a probability GeoTIFF) with
small strips against the whole-raster stages.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from shapely.geometry import MultiPolygon, Polygon

from core.errors import RasterInputError
from tasks.attribute import ATTRIBUTE_HALO_PX, attribute_lakes, lake_window, measure_lake, valid_footprint, window_grid
from tasks.extract import extract_lakes
from tasks.footprint import StripFootprint
from tasks.grid import GridSpec
from tasks.preprocess import S2Scene
from tasks.stack import StackReader, stack_arrays, write_stack
from tasks.validity import dry_capable, dry_capable_before_water
from tasks.vectorize import StripPolygoniser, mask_to_polygons, probability_to_mask

EPSG = 32643
X0, Y0 = 600_000.0, 4_800_000.0
GRID = GridSpec(EPSG, (10.0, 0.0, X0, 0.0, -10.0, Y0), 64, 48)
PIXEL_M2 = 100.0


def _by_strips(mask: np.ndarray, strip_rows: int, grid: GridSpec = GRID, min_area_m2: float = 0.0) -> list:
    polygoniser = StripPolygoniser(grid, min_area_m2=min_area_m2)
    for r0 in range(0, grid.height, strip_rows):
        polygoniser.add(mask[r0 : r0 + strip_rows], r0)
    return polygoniser.finish()


def _same_polygons(a: list, b: list) -> None:
    """Same lakes: one-to-one, each pair topologically equal (same pixels, same holes)."""
    assert len(a) == len(b)
    key = lambda p: (round(p.area), p.bounds)  # noqa: E731
    for p, q in zip(sorted(a, key=key), sorted(b, key=key), strict=True):
        assert p.is_valid and q.is_valid
        assert p.symmetric_difference(q).area == pytest.approx(0.0, abs=1e-6), (p.wkt, q.wkt)
        assert p.length == pytest.approx(q.length)


def test_lake_across_a_strip_edge_is_one_polygon_with_the_right_area() -> None:
    """The issue's test: a lake drawn across a block boundary comes out as one polygon of its own area."""
    mask = np.zeros(GRID.shape, dtype=bool)
    mask[10:22, 5:20] = True  # rows 10..21: across the seam at row 16
    (poly,) = _by_strips(mask, 16)
    assert isinstance(poly, Polygon)
    assert poly.area == pytest.approx(12 * 15 * PIXEL_M2)
    assert poly.length == pytest.approx(2 * (12 + 15) * 10.0), "no seam edge left inside the outline"


def test_u_shaped_lake_crossing_a_seam_twice_is_one_polygon() -> None:
    """A U whose two arms cross the seam (two pieces above, one below) and its upside-down twin."""
    u = np.zeros(GRID.shape, dtype=bool)
    u[4:20, 4:8] = True  # left arm, rows 4..19
    u[4:20, 16:20] = True  # right arm
    u[16:20, 4:20] = True  # base, below the seam at 16
    for mask in (u, u[::-1].copy()):
        (poly,) = _by_strips(mask, 16)
        assert poly.area == pytest.approx(mask.sum() * PIXEL_M2)
        _same_polygons([poly], mask_to_polygons(mask, GRID, min_area_m2=0.0))


def test_lake_over_three_strips_and_a_hole_on_a_seam() -> None:
    """A ring lake over three strips whose island straddles a seam: one polygon, one hole, exact area."""
    mask = np.zeros(GRID.shape, dtype=bool)
    mask[2:40, 10:40] = True  # rows 2..39: strips 0, 1 and 2 of 16 rows
    mask[12:20, 20:30] = False  # the island crosses the seam at row 16
    (poly,) = _by_strips(mask, 16)
    assert isinstance(poly, Polygon) and len(poly.interiors) == 1
    assert poly.area == pytest.approx(mask.sum() * PIXEL_M2)
    assert poly.length == pytest.approx((2 * (38 + 30) + 2 * (8 + 10)) * 10.0), "island shores count"
    _same_polygons([poly], mask_to_polygons(mask, GRID, min_area_m2=0.0))


def test_hole_closed_only_across_a_seam() -> None:
    """An island whose ring of water closes only below the seam: the hole appears after stitching."""
    mask = np.zeros(GRID.shape, dtype=bool)
    mask[10:22, 10:30] = True
    mask[12:17, 14:26] = False  # island rows 12..16: its south shore is row 17, below the seam at 16
    (poly,) = _by_strips(mask, 16)
    assert len(poly.interiors) == 1 and poly.area == pytest.approx(mask.sum() * PIXEL_M2)


def test_diagonal_contact_across_a_seam_stays_two_lakes() -> None:
    """4-connectivity, like mask_to_polygons: pixels meeting only at a corner on the seam are two lakes."""
    mask = np.zeros(GRID.shape, dtype=bool)
    mask[8:16, 8:16] = True
    mask[16:24, 16:24] = True  # touches the first at one corner, on the seam
    assert len(_by_strips(mask, 16)) == 2 == len(mask_to_polygons(mask, GRID, min_area_m2=0.0))


def test_minimum_area_applies_to_the_stitched_lake() -> None:
    """Two 30-px halves of a 60-px lake are each under 0.5 ha; the lake is not, and is kept."""
    mask = np.zeros(GRID.shape, dtype=bool)
    mask[13:19, 30:40] = True  # 3 rows above the seam at 16, 3 below: 60 px = 6000 m²
    mask[30:34, 5:15] = True  # 40 px = 4000 m² alone: dropped
    (poly,) = _by_strips(mask, 16, min_area_m2=5000.0)
    assert poly.area == pytest.approx(6000.0)


def test_strips_must_come_in_order() -> None:
    polygoniser = StripPolygoniser(GRID)
    with pytest.raises(ValueError, match="next rows"):
        polygoniser.add(np.zeros((16, GRID.width), bool), 16)
    polygoniser.add(np.zeros((16, GRID.width), bool), 0)
    with pytest.raises(ValueError, match="fed rows"):
        polygoniser.finish()


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, (20, 14), elements=st.booleans()), st.integers(1, 7))
def test_any_mask_any_strip_height_gives_the_whole_mask_polygons(mask: np.ndarray, strip_rows: int) -> None:
    """Ragged masks (diagonal contacts, one-pixel holes, lakes over many strips): same lakes as at once."""
    grid = GridSpec(32633, (10.0, 0.0, 400_000.0, 0.0, -10.0, 5_000_000.0), 14, 20)
    _same_polygons(_by_strips(mask, strip_rows, grid), mask_to_polygons(mask, grid, min_area_m2=0.0))


# --- the footprint by strips -------------------------------------------------------------------


def _footprint_mask() -> np.ndarray:
    rows, cols = np.indices(GRID.shape)
    seen = np.ones(GRID.shape, dtype=bool)
    seen[(rows - 20) ** 2 + (cols - 30) ** 2 < 90] = False  # a round cloud across the seam at 16
    seen[30:36, 0:12] = False  # a gap touching the west edge, across the seam at 32
    seen[np.abs(rows - cols + 30) < 2] = False  # a diagonal strip of water and its ring
    seen[24:27, 8:11] = False  # one water pixel's ring
    seen[30:34, 20:24] = False  # a lake's ring across the seam at 32
    seen[44:, 50:] = False
    return seen


def _by_strip_footprint(mask: np.ndarray, strip_rows: int, simplify_m: float) -> MultiPolygon | None:
    outline = StripFootprint(GRID, simplify_m)
    for r0 in range(0, GRID.height, strip_rows):
        outline.add(mask[r0 : r0 + strip_rows], r0)
    return outline.finish()


def test_strip_footprint_unsimplified_is_the_whole_mask_outline() -> None:
    seen = _footprint_mask()
    whole, strips = valid_footprint(seen, GRID, simplify_m=0.0), _by_strip_footprint(seen, 16, 0.0)
    assert whole is not None and strips is not None and strips.is_valid
    assert strips.symmetric_difference(whole).area == pytest.approx(0.0, abs=1e-6)
    assert strips.area == pytest.approx(seen.sum() * PIXEL_M2)


def test_strip_footprint_simplified_has_no_seam_slivers_and_matches_within_the_tolerance() -> None:
    """Simplified strips still meet edge to edge: same parts and holes as the whole-mask outline,
    the two differing by less than the tolerance along the outline.
    """
    seen = _footprint_mask()
    whole, strips = valid_footprint(seen, GRID), _by_strip_footprint(seen, 16, 20.0)
    assert whole is not None and strips is not None and strips.is_valid
    assert len(strips.geoms) == len(whole.geoms)
    assert sum(len(p.interiors) for p in strips.geoms) == sum(len(p.interiors) for p in whole.geoms)
    # A seam sliver would be an extra hole with next to no area.
    for hole in (Polygon(r) for p in strips.geoms for r in p.interiors):
        assert hole.area > 4 * PIXEL_M2, "no sliver holes"
    assert strips.symmetric_difference(whole).area < 20.0 * whole.length
    assert shapely.hausdorff_distance(strips.boundary, whole.boundary) <= 2 * 20.0 + 1e-6


@pytest.mark.parametrize("simplify_m", [0.0, 20.0])
def test_strip_footprint_keeps_a_clear_island_inside_a_cloud_ring(simplify_m: float) -> None:
    """A clear patch inside a ring of cloud stays in the footprint, ring within a strip or across seams."""
    rows, cols = np.indices(GRID.shape)
    r2 = (rows - 16.5) ** 2 + (cols - 30.5) ** 2
    seen = ~((r2 < 12.5**2) & (r2 >= 6.5**2))  # the cloud ring, rows 4..28; its centre is clear
    for strip_rows in (32, 16, 5):  # the ring inside one strip; across one seam; across several
        whole = valid_footprint(seen, GRID, simplify_m=simplify_m)
        strips = _by_strip_footprint(seen, strip_rows, simplify_m)
        assert whole is not None and strips is not None and strips.is_valid
        assert len(strips.geoms) == len(whole.geoms) == 2, "the island is a part of its own"
        centre = shapely.Point(*(GRID.affine @ (30.5, 16.5)))
        assert strips.contains(centre) and whole.contains(centre)
        if simplify_m == 0:
            assert strips.symmetric_difference(whole).area == pytest.approx(0.0, abs=1e-6)


def test_strip_footprint_of_nothing_is_none() -> None:
    assert _by_strip_footprint(np.zeros(GRID.shape, bool), 16, 20.0) is None


# --- measure_lake ---------------------------------------------------------------------------------


def test_measure_lake_on_a_window_equals_the_whole_raster() -> None:
    """The window (bbox + halo) gives the lake's attributes exactly as the whole rasters do."""
    mask = np.zeros(GRID.shape, dtype=bool)
    mask[5:15, 20:30] = True
    mask[8:10, 24:26] = False
    rng = np.random.default_rng(3)
    prob = np.where(mask, rng.uniform(0.6, 1.0, GRID.shape), 0.1).astype(np.float32)
    dem = rng.uniform(3000, 4000, GRID.shape).astype(np.float32)
    dem[5:7, 20:30] = np.nan
    (poly,) = mask_to_polygons(mask, GRID, min_area_m2=0.0)
    window = lake_window(poly, GRID)  # the default halo: room for the surrounding-slope ring
    h = ATTRIBUTE_HALO_PX
    assert window == (max(0, 5 - h), min(GRID.height, 15 + h), max(0, 20 - h), min(GRID.width, 30 + h))
    assert lake_window(poly, GRID, 3) == (2, 18, 17, 33)
    r0, r1, c0, c1 = window
    lake = measure_lake(poly, prob[r0:r1, c0:c1], dem[r0:r1, c0:c1], window_grid(GRID, window))
    inside = mask & np.isfinite(dem)
    assert lake.area_m2 == pytest.approx(96 * PIXEL_M2)
    assert lake.elevation_m == pytest.approx(float(np.median(dem[inside])))
    assert lake.mean_probability == pytest.approx(float(prob[mask].mean()), rel=1e-6)
    assert lake == attribute_lakes([poly], prob, dem, GRID)[0]
    with pytest.raises(ValueError, match="grid"):
        measure_lake(poly, prob, dem[r0:r1, c0:c1], window_grid(GRID, window))


# --- extract_lakes on files -----------------------------------------------------------------------


def _scene(tmp_path: Path, *, scl_known: bool = True) -> tuple:
    """A stack (write_stack) and a probability GeoTIFF with lakes laid across strip edges."""
    h, w = GRID.shape
    rows, cols = np.indices(GRID.shape)
    refl = np.full((12, h, w), 1500.0, dtype=np.float32)
    clear = np.ones((h, w), dtype=bool)
    clear[40:46, 0:20] = False  # a cloud across the seams at 42 (7-row strips) and 45 (1-row)
    snow = np.zeros((h, w), dtype=bool)
    snow[0:6, 50:64] = True
    s2 = S2Scene(refl, clear, 0.05 if scl_known else math.nan, snow if scl_known else None)
    s1 = np.full((2, h, w), -15.0, dtype=np.float32)
    dem = (3000.0 + 2.0 * rows + 0.5 * cols).astype(np.float32)
    dem[20:24, 30:34] = np.nan
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
    prob[(rows - 22) ** 2 + (cols - 32) ** 2 <= 120] = 0.9  # a round lake over rows 11..33
    prob[(rows - 22) ** 2 + (cols - 32) ** 2 <= 6] = 0.2  # with an island
    prob[4:30, 2:6] = 0.8  # a long thin lake
    prob[26:30, 2:14] = 0.8  # … an L
    prob[36:39, 40:50] = 0.7  # 30 px: under 0.5 ha
    prob[44:47, 40:60] = 0.95  # 60 px in the south (across seams of 1-row strips)
    prob[~valid] = np.nan
    path = tmp_path / "probability.tif"
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": 1,
        "dtype": "float32",
        "crs": GRID.crs,
        "transform": GRID.affine,
        "nodata": float("nan"),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(prob[np.newaxis])
    return info, path


def _whole_raster(info, path: Path, threshold: float, min_area_m2: float) -> tuple:
    """What extract_lakes computed before it streamed: every stage on the whole rasters."""
    with StackReader(info) as stack:
        valid, before, dem = stack.read_valid(), stack.read_dry_capable(), stack.read_band("DEM")
    with rasterio.open(path) as src:
        prob = src.read(1)
    mask = probability_to_mask(prob, threshold) & valid
    polygons = mask_to_polygons(mask, GRID, min_area_m2=min_area_m2, valid=valid)
    seen = dry_capable(before, mask, prob)
    return attribute_lakes(polygons, prob, dem, GRID), None if seen is None else valid_footprint(seen, GRID)


@pytest.mark.parametrize("strip_rows", [1, 7, 16, 1024])
def test_extract_lakes_by_strips_equals_the_whole_raster_stages(tmp_path: Path, strip_rows: int) -> None:
    info, path = _scene(tmp_path)
    out = extract_lakes(info, path, 0.5, 5000.0, strip_rows=strip_rows)
    lakes, footprint = _whole_raster(info, path, 0.5, 5000.0)
    assert len(out.lakes) == len(lakes) == 3
    key = lambda lake: lake.area_m2  # noqa: E731
    for got, want in zip(sorted(out.lakes, key=key), sorted(lakes, key=key), strict=True):
        assert got.geometry.symmetric_difference(want.geometry).area == pytest.approx(0.0, abs=1e-6)
        assert (got.area_m2, got.perimeter_m) == pytest.approx((want.area_m2, want.perimeter_m))
        assert (got.centroid_lon, got.centroid_lat) == pytest.approx((want.centroid_lon, want.centroid_lat))
        assert got.elevation_m == pytest.approx(want.elevation_m)
        assert got.mean_probability == pytest.approx(want.mean_probability)
        assert got.utm_epsg == EPSG
    assert out.footprint is not None and footprint is not None and out.footprint.is_valid
    assert out.footprint.symmetric_difference(footprint).area < 20.0 * footprint.length
    assert out.footprint.area == pytest.approx(footprint.area, rel=0.02)
    # The lakes (with their one-pixel ring) are out of the footprint at every strip height, up to
    # the simplification's nibbles (far from the 95 % cover the merge needs to call a lake absent).
    for lake in out.lakes:
        assert out.footprint.intersection(lake.geometry.buffer(-5.0)).area < 0.05 * lake.area_m2


def test_extract_lakes_without_scl_has_no_footprint_and_the_same_lakes(tmp_path: Path) -> None:
    known, known_path = _scene(tmp_path / "known")
    blind, blind_path = _scene(tmp_path / "blind", scl_known=False)
    with_scl = extract_lakes(known, known_path, 0.5, 5000.0, strip_rows=7)
    without = extract_lakes(blind, blind_path, 0.5, 5000.0, strip_rows=7)
    assert without.footprint is None, "cloud state unknown: nothing seen dry"
    assert [lk.area_m2 for lk in without.lakes] == [lk.area_m2 for lk in with_scl.lakes]


@pytest.mark.parametrize(
    ("size", "epsg"), [((10, 10), EPSG), ((GRID.width, GRID.height), EPSG + 1)], ids=["size", "crs"]
)
def test_probability_on_another_grid_is_refused(tmp_path: Path, size: tuple[int, int], epsg: int) -> None:
    """A probability raster of another size or CRS is refused, naming the file (never read at wrong pixels)."""
    info, _ = _scene(tmp_path)
    other = tmp_path / "other.tif"
    width, height = size
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "float32",
        "crs": f"EPSG:{epsg}",
        "transform": GRID.affine,
    }
    with rasterio.open(other, "w", **profile) as dst:
        dst.write(np.zeros((1, height, width), np.float32))
    with pytest.raises(RasterInputError, match=r"other\.tif"):
        extract_lakes(info, other, 0.5, 5000.0)
