"""Lake attributes in metres (UTM), outlines in UTM with their EPSG, stored in EPSG:4326; the footprint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from pyproj import Geod, Transformer
from shapely.geometry import MultiPolygon, Point

from db.geometry import to_lonlat
from db.records import ObservedLake
from tasks.attribute import attribute_lakes, valid_footprint
from tasks.grid import GridSpec
from tasks.vectorize import mask_to_polygons

# Ile Alatau, UTM 43N.
GRID = GridSpec(32643, (10.0, 0.0, 640_000.0, 0.0, -10.0, 4_770_000.0), 40, 30)
TO_LL = Transformer.from_crs(32643, 4326, always_xy=True)
TO_UTM = Transformer.from_crs(4326, 32643, always_xy=True)


def _square_lake():
    mask = np.zeros(GRID.shape, dtype=bool)
    mask[5:15, 20:30] = True  # 10 × 10 pixels
    dem = np.full(GRID.shape, 3000.0, dtype=np.float32)
    dem[5:15, 20:30] = np.arange(100, dtype=np.float32).reshape(10, 10) + 3500.0
    prob = np.where(mask, 0.8, 0.1).astype(np.float32)
    prob[5, 20] = 0.6
    return mask, dem, prob


def test_square_lake_attributes():
    """A 10 × 10-pixel lake is 10,000 m², 400 m around (UTM); DEM and probability are its pixels'.

    Guards against degree-based areas and off-by-one windows.
    """
    mask, dem, prob = _square_lake()
    polys = mask_to_polygons(mask, GRID, min_area_m2=0.0)
    (lake,) = attribute_lakes(polys, prob, dem, GRID)
    assert isinstance(lake, ObservedLake)
    assert lake.area_m2 == pytest.approx(10_000.0)
    assert lake.perimeter_m == pytest.approx(400.0)
    assert lake.elevation_m == pytest.approx(3549.5)  # median of 3500 … 3599
    assert lake.mean_probability == pytest.approx((99 * 0.8 + 0.6) / 100, rel=1e-6)
    cx, cy = GRID.affine @ (25, 10)
    lon, lat = TO_LL.transform(cx, cy)
    assert (lake.centroid_lon, lake.centroid_lat) == pytest.approx((lon, lat), abs=1e-9)
    assert 76 < lake.centroid_lon < 78 and 42 < lake.centroid_lat < 44


def test_geometry_is_a_valid_lonlat_multipolygon_of_the_same_lake():
    """The outline handed to the DB travels in the grid's UTM CRS (named in the record); its one
    projection, which the merge stores, is a valid EPSG:4326 MultiPolygon of the same place and size.

    Guards against a missing or swapped reprojection.
    """
    mask, dem, prob = _square_lake()
    (lake,) = attribute_lakes(mask_to_polygons(mask, GRID, min_area_m2=0.0), prob, dem, GRID)
    assert lake.utm_epsg == GRID.epsg and isinstance(lake.geometry, MultiPolygon)
    assert lake.geometry.equals(mask_to_polygons(mask, GRID, min_area_m2=0)[0])
    geom = to_lonlat([lake.geometry], lake.utm_epsg)[0]
    assert isinstance(geom, MultiPolygon) and geom.is_valid
    minx, miny, maxx, maxy = geom.bounds
    assert -180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90
    # Same place and size: geodesic area of the lon/lat outline ≈ the UTM area (scale ~0.9997).
    geodesic_area = abs(Geod(ellps="WGS84").geometry_area_perimeter(geom)[0])
    assert geodesic_area == pytest.approx(10_000.0, rel=2e-3)
    back = shapely.transform(geom, lambda xy: np.column_stack(TO_UTM.transform(*xy.T)))
    assert back.symmetric_difference(mask_to_polygons(mask, GRID, min_area_m2=0)[0]).area < 1.0


def test_lake_with_island_and_nodata_dem():
    """Islands are holes.

    (area subtracted, shore counted); a lake with no DEM gets elevation None, never 0
    """
    mask = np.zeros(GRID.shape, dtype=bool)
    mask[2:22, 2:22] = True
    mask[10:14, 10:14] = False  # island of 16 px
    dem = np.full(GRID.shape, np.nan, dtype=np.float32)
    prob = np.where(mask, 0.9, 0.0).astype(np.float32)
    (lake,) = attribute_lakes(mask_to_polygons(mask, GRID), prob, dem, GRID)
    assert lake.area_m2 == pytest.approx((400 - 16) * 100.0)
    assert lake.perimeter_m == pytest.approx(800.0 + 160.0), "island shores count"
    assert lake.elevation_m is None, "no DEM inside: None, not 0"
    assert lake.mean_probability == pytest.approx(0.9)
    assert len(lake.geometry.geoms[0].interiors) == 1


def test_median_elevation_ignores_nodata_pixels():
    """NaN DEM pixels inside a lake are left out of the median instead of poisoning it."""
    mask, dem, prob = _square_lake()
    dem[5:15, 20:25] = np.nan  # west half missing: the median is of 3505…3509, 3515…3519, …
    (lake,) = attribute_lakes(mask_to_polygons(mask, GRID, min_area_m2=0.0), prob, dem, GRID)
    expected = float(np.median(np.arange(100).reshape(10, 10)[:, 5:] + 3500.0))
    assert lake.elevation_m == pytest.approx(expected)


def test_shape_mismatch_is_refused():
    """Rasters not on the grid are refused rather than sampled at wrong pixels."""
    mask, dem, prob = _square_lake()
    with pytest.raises(ValueError, match="grid"):
        attribute_lakes(mask_to_polygons(mask, GRID), prob[:-1], dem, GRID)


def test_valid_footprint():
    """The footprint covers the valid pixels, keeps clouds as holes, is None when nothing is valid.

    Guards against "absent" rows claimed for unseen places.
    """
    valid = np.zeros(GRID.shape, dtype=bool)
    assert valid_footprint(valid, GRID) is None
    valid[:, :30] = True
    valid[10:20, 10:20] = False  # a cloud: not observed
    fp_utm = valid_footprint(valid, GRID)
    assert isinstance(fp_utm, MultiPolygon) and fp_utm.is_valid  # in the grid's CRS: SceneResult.utm_epsg
    fp = to_lonlat([fp_utm], GRID.epsg)[0]  # as the merge stores it
    assert isinstance(fp, MultiPolygon) and fp.is_valid
    geodesic_area = abs(Geod(ellps="WGS84").geometry_area_perimeter(fp)[0])
    assert geodesic_area == pytest.approx((30 * 30 - 100) * 100.0, rel=5e-3)

    def lonlat(col: float, row: float) -> Point:
        return Point(*TO_LL.transform(*(GRID.affine @ (col, row))))

    assert fp.contains(lonlat(5, 5)) and fp.contains(lonlat(25, 25))
    assert not fp.contains(lonlat(15, 15)), "the cloud is a hole"
    assert not fp.contains(lonlat(35, 5)), "invalid columns are outside"
    assert math.isclose(fp.bounds[0], TO_LL.transform(*(GRID.affine @ (0, 30)))[0], abs_tol=1e-6)
