"""Per-lake attributes and the scene's valid footprint.

Areas and lengths are measured in the scene's UTM CRS (metres), never in degrees; geometries
handed on stay in that CRS, valid ``MultiPolygon`` with the grid's EPSG in the record
(``ObservedLake.utm_epsg``), as :mod:`db.records` expects: the merge projects them to EPSG:4326
once, for storage. Centroids are lon/lat degrees.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon

from db.geometry import as_multipolygon, lonlat_transformer, to_lonlat
from db.records import ObservedLake
from tasks.grid import GridSpec
from tasks.lake_measures import (
    area_uncertainty,
    lake_volume,
    probability_entropy,
    smoothed_perimeter,
    surrounding_slope,
)

__all__ = ["attribute_lakes", "to_lonlat_multipolygon", "valid_footprint"]


def to_lonlat_multipolygon(geom_utm: shapely.Geometry, grid: GridSpec) -> MultiPolygon | None:
    """Reprojects a polygon from the grid's CRS to EPSG:4326 as a valid MultiPolygon.

    :func:`db.geometry.to_lonlat` of one outline (what the merge stores); None when nothing
    polygonal is left.
    """
    return to_lonlat([geom_utm], grid.epsg)[0]


def _pixels_inside(poly: Polygon | MultiPolygon, grid: GridSpec) -> tuple[slice, slice, NDArray[np.bool_]]:
    """Window of the grid around ``poly`` and the pixels whose centres lie inside it."""
    from rasterio.features import rasterize

    inv = ~grid.affine
    minx, miny, maxx, maxy = poly.bounds
    cols, rows = zip(*(inv @ (x, y) for x in (minx, maxx) for y in (miny, maxy)), strict=True)
    r0, r1 = max(0, math.floor(min(rows))), min(grid.height, math.ceil(max(rows)))
    c0, c1 = max(0, math.floor(min(cols))), min(grid.width, math.ceil(max(cols)))
    if r1 <= r0 or c1 <= c0:
        return slice(0, 0), slice(0, 0), np.zeros((0, 0), dtype=bool)
    window_transform = grid.affine @ grid.affine.translation(c0, r0)
    inside = rasterize([(poly, 1)], out_shape=(r1 - r0, c1 - c0), transform=window_transform, dtype="uint8").astype(
        bool
    )
    return slice(r0, r1), slice(c0, c1), inside


def attribute_lakes(
    polygons_utm: Iterable[Polygon | MultiPolygon],
    prob: NDArray[np.floating],
    dem: NDArray[np.floating],
    grid: GridSpec,
) -> list[ObservedLake]:
    """Attributes each lake polygon of one scene.

    Args:
        polygons_utm: Lake outlines in the grid's CRS (from
            :func:`tasks.vectorize.mask_to_polygons`).
        prob: Water probability ``(H, W)`` 0–1 on ``grid``, NaN nodata.
        dem: Elevation ``(H, W)`` metres on ``grid``, NaN nodata.
        grid: The scene grid (UTM).

    Returns:
        One :class:`~db.records.ObservedLake` per polygon with area (m²) and perimeter (m, holes'
        rings included: islands have shores) in UTM; centroid lon/lat (of the UTM centroid);
        median DEM over the pixels whose centres are inside (None if all NaN); mean probability
        and its mean binary entropy over the same pixels (NaN if none is finite); smoothed
        perimeter, area uncertainty, surrounding slope and volume (:mod:`tasks.lake_measures`);
        geometry the repaired outline in the grid's CRS, ``utm_epsg`` the grid's EPSG. Polygons
        with no area after repair are skipped.
    """
    prob = np.asarray(prob)
    dem = np.asarray(dem)
    if prob.shape != grid.shape or dem.shape != grid.shape:
        raise ValueError(f"prob {prob.shape} and dem {dem.shape} must match the grid {grid.shape}")
    tr = lonlat_transformer(grid.epsg)
    pixel_m = grid.resolution
    lakes: list[ObservedLake] = []
    for raw in polygons_utm:
        geometry = as_multipolygon(raw)
        if geometry is None:  # nothing with an area left after repair
            continue
        poly = geometry.geoms[0] if len(geometry.geoms) == 1 else geometry
        rows, cols, inside = _pixels_inside(poly, grid)
        elev = dem[rows, cols][inside]
        p = prob[rows, cols][inside]
        elev, p = elev[np.isfinite(elev)], p[np.isfinite(p)]
        c = poly.centroid
        lon, lat = tr.transform(c.x, c.y)
        area_error = area_uncertainty(poly, pixel_m)
        volume, volume_error = lake_volume(float(poly.area), area_error)
        lakes.append(
            ObservedLake(
                geometry=geometry,
                area_m2=float(poly.area),
                perimeter_m=float(poly.length),
                centroid_lon=float(lon),
                centroid_lat=float(lat),
                elevation_m=float(np.median(elev)) if elev.size else None,
                mean_probability=float(p.mean()) if p.size else math.nan,
                perimeter_smoothed_m=smoothed_perimeter(poly, pixel_m),
                area_uncertainty_m2=area_error,
                surrounding_slope_deg=surrounding_slope(poly, dem, grid),
                probability_entropy=probability_entropy(prob[rows, cols], inside),
                volume_m3=volume,
                volume_uncertainty_m3=volume_error,
                utm_epsg=grid.epsg,
            )
        )
    return lakes


def valid_footprint(valid: NDArray[np.bool_], grid: GridSpec, simplify_m: float = 20.0) -> MultiPolygon | None:
    """Outline of the valid pixels in the grid's CRS (``grid.epsg``), holes (clouds, gaps) kept.

    Args:
        valid: bool ``(H, W)`` on ``grid``.
        grid: The scene grid.
        simplify_m: Douglas-Peucker tolerance in metres (topology preserved), applied in UTM.

    Returns:
        A valid MultiPolygon in the grid's CRS (the scene's ``SceneResult.utm_epsg``), or None
        when no pixel is valid.
    """
    from rasterio.features import shapes
    from shapely.geometry import shape

    v = np.asarray(valid, dtype=bool)
    if v.shape != grid.shape:
        raise ValueError(f"valid {v.shape} does not match the grid {grid.shape}")
    if not v.any():
        return None
    parts = [shape(g) for g, _ in shapes(v.astype(np.uint8), mask=v, connectivity=4, transform=grid.affine)]
    merged = shapely.union_all(parts)
    if simplify_m > 0:
        merged = merged.simplify(simplify_m, preserve_topology=True)
    return as_multipolygon(merged)
