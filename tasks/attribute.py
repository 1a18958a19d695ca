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
from affine import Affine
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon

from db.geometry import as_multipolygon, lonlat_transformer, to_lonlat
from db.records import ObservedLake
from tasks.grid import GridSpec
from tasks.lake_measures import (
    SLOPE_RING_M,
    area_uncertainty,
    lake_volume,
    probability_entropy,
    smoothed_perimeter,
    surrounding_slope,
)

__all__ = [
    "ATTRIBUTE_HALO_PX",
    "PixelWindow",
    "attribute_lakes",
    "lake_window",
    "measure_lake",
    "to_lonlat_multipolygon",
    "valid_footprint",
    "window_grid",
]


def to_lonlat_multipolygon(geom_utm: shapely.Geometry, grid: GridSpec) -> MultiPolygon | None:
    """Reprojects a polygon from the grid's CRS to EPSG:4326 as a valid MultiPolygon.

    :func:`db.geometry.to_lonlat` of one outline (what the merge stores); None when nothing
    polygonal is left.
    """
    return to_lonlat([geom_utm], grid.epsg)[0]


ATTRIBUTE_HALO_PX = math.ceil(SLOPE_RING_M / 10.0) + 2
"""Pixels of raster read around a lake's bounding box for its measurements: the surrounding-slope
ring (:data:`tasks.lake_measures.SLOPE_RING_M`, 200 m = 20 px of the 10 m grid) plus one pixel for
the slope's central differences and one for rounding (22). Change together with ``SLOPE_RING_M``
or the grid's pixel size: ``tests/unit/test_lake_measures.py`` checks the ring fits."""

PixelWindow = tuple[int, int, int, int]
"""``(row0, row1, col0, col1)``: grid rows ``[row0, row1)`` × columns ``[col0, col1)``."""


def lake_window(outline: Polygon | MultiPolygon, grid: GridSpec, halo_px: int = ATTRIBUTE_HALO_PX) -> PixelWindow:
    """The grid pixels covering ``outline``'s bounding box, ``halo_px`` more on each side, clipped.

    Args:
        outline: A lake outline in the grid's CRS (metres).
        grid: The scene grid.
        halo_px: Extra pixels on every side (clipped at the grid's edges).

    Returns:
        ``(row0, row1, col0, col1)``; empty (``row1 <= row0`` or ``col1 <= col0``) when the
        outline lies outside the grid.
    """
    inv = ~grid.affine
    minx, miny, maxx, maxy = outline.bounds
    cols, rows = zip(*(inv @ (x, y) for x in (minx, maxx) for y in (miny, maxy)), strict=True)
    r0 = max(0, math.floor(min(rows)) - halo_px)
    r1 = min(grid.height, math.ceil(max(rows)) + halo_px)
    c0 = max(0, math.floor(min(cols)) - halo_px)
    c1 = min(grid.width, math.ceil(max(cols)) + halo_px)
    return r0, r1, c0, c1


def window_grid(grid: GridSpec, window: PixelWindow) -> GridSpec:
    """The sub-grid of ``grid`` over ``window`` (same CRS and pixel size, shifted origin)."""
    r0, r1, c0, c1 = window
    return GridSpec.from_affine(grid.epsg, grid.affine @ Affine.translation(c0, r0), c1 - c0, r1 - r0)


def measure_lake(
    outline: Polygon | MultiPolygon,
    prob_window: NDArray[np.floating],
    dem_window: NDArray[np.floating],
    window: GridSpec,
) -> ObservedLake:
    """Every per-lake measurement of one lake: the one place a lake's rasters are read for its record.

    Args:
        outline: The lake, a valid polygonal outline in the window's CRS (UTM metres) with an
            area (e.g. from :func:`tasks.vectorize.mask_to_polygons`).
        prob_window: Water probability 0–1 on ``window``, NaN nodata.
        dem_window: Elevation in metres on ``window``, NaN nodata.
        window: The grid of both arrays: a window of the scene grid around the lake (see
            :func:`lake_window`, :func:`window_grid`); it may hold other lakes' pixels too.

    Returns:
        The :class:`~db.records.ObservedLake`: area (m²) and perimeter (m, holes' rings included:
        islands have shores) in UTM; centroid lon/lat (of the UTM centroid); median DEM over the
        pixels whose centres are inside (None if all NaN); mean probability and its mean binary
        entropy over the same pixels (NaN if none is finite); smoothed perimeter, area
        uncertainty, surrounding slope (the ring must lie in the window: :data:`ATTRIBUTE_HALO_PX`)
        and volume (:mod:`tasks.lake_measures`); geometry the outline as a MultiPolygon in the
        window's CRS, ``utm_epsg`` its EPSG.

    Raises:
        ValueError: The arrays are not on ``window``, or the outline has no area.
    """
    from rasterio.features import rasterize

    prob_window, dem_window = np.asarray(prob_window), np.asarray(dem_window)
    if prob_window.shape != window.shape or dem_window.shape != window.shape:
        raise ValueError(f"prob {prob_window.shape} and dem {dem_window.shape} must match the grid {window.shape}")
    geometry = as_multipolygon(outline)
    if geometry is None:
        raise ValueError("a lake outline with no area cannot be measured")
    poly = geometry.geoms[0] if len(geometry.geoms) == 1 else geometry
    # Pixel centres inside the outline (rasterize's default rule): a lake's own pixels, exactly.
    inside = rasterize([(poly, 1)], out_shape=window.shape, transform=window.affine, dtype="uint8").astype(bool)
    elev, p = dem_window[inside], prob_window[inside]
    elev, p = elev[np.isfinite(elev)], p[np.isfinite(p)]
    c = poly.centroid
    lon, lat = lonlat_transformer(window.epsg).transform(c.x, c.y)
    area_error = area_uncertainty(poly, window.resolution)
    volume, volume_error = lake_volume(float(poly.area), area_error)
    return ObservedLake(
        geometry=geometry,
        area_m2=float(poly.area),
        perimeter_m=float(poly.length),
        centroid_lon=float(lon),
        centroid_lat=float(lat),
        elevation_m=float(np.median(elev)) if elev.size else None,
        mean_probability=float(p.mean()) if p.size else math.nan,
        perimeter_smoothed_m=smoothed_perimeter(poly, window.resolution),
        area_uncertainty_m2=area_error,
        surrounding_slope_deg=surrounding_slope(poly, dem_window, window),
        probability_entropy=probability_entropy(prob_window, inside),
        volume_m3=volume,
        volume_uncertainty_m3=volume_error,
        utm_epsg=window.epsg,
    )


def attribute_lakes(
    polygons_utm: Iterable[Polygon | MultiPolygon],
    prob: NDArray[np.floating],
    dem: NDArray[np.floating],
    grid: GridSpec,
) -> list[ObservedLake]:
    """Attributes each lake polygon of one scene held in memory (:func:`measure_lake` per lake).

    Args:
        polygons_utm: Lake outlines in the grid's CRS (from
            :func:`tasks.vectorize.mask_to_polygons`).
        prob: Water probability ``(H, W)`` 0–1 on ``grid``, NaN nodata.
        dem: Elevation ``(H, W)`` metres on ``grid``, NaN nodata.
        grid: The scene grid (UTM).

    Returns:
        One :class:`~db.records.ObservedLake` per polygon (see :func:`measure_lake`), each
        measured on the window :func:`lake_window` gives. Polygons with no area after repair,
        or outside the grid, are skipped. (:func:`tasks.extract.extract_lakes` streams the
        same windows from the files instead.)
    """
    prob = np.asarray(prob)
    dem = np.asarray(dem)
    if prob.shape != grid.shape or dem.shape != grid.shape:
        raise ValueError(f"prob {prob.shape} and dem {dem.shape} must match the grid {grid.shape}")
    lakes: list[ObservedLake] = []
    for raw in polygons_utm:
        geometry = as_multipolygon(raw)
        if geometry is None:  # nothing with an area left after repair
            continue
        r0, r1, c0, c1 = window = lake_window(geometry, grid)
        if r1 <= r0 or c1 <= c0:
            continue
        lakes.append(measure_lake(geometry, prob[r0:r1, c0:c1], dem[r0:r1, c0:c1], window_grid(grid, window)))
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
