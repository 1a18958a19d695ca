"""Per-lake attributes and the scene's valid footprint.

Areas and lengths are measured in the scene's UTM CRS (metres), never in degrees; geometries
handed on are valid ``MultiPolygon`` in EPSG:4326 (lon, lat), as :mod:`db.records` expects.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import Transformer
from shapely.geometry import MultiPolygon, Polygon

from db.records import ObservedLake
from tasks.grid import GridSpec
from tasks.vectorize import as_polygonal

__all__ = ["attribute_lakes", "to_lonlat_multipolygon", "valid_footprint"]


def _to_lonlat(grid: GridSpec) -> Transformer:
    return Transformer.from_crs(grid.epsg, 4326, always_xy=True)


def _as_multipolygon(geom: shapely.Geometry) -> MultiPolygon | None:
    poly = as_polygonal(geom)
    if poly is None:
        return None
    return poly if isinstance(poly, MultiPolygon) else MultiPolygon([poly])


def to_lonlat_multipolygon(geom_utm: shapely.Geometry, grid: GridSpec) -> MultiPolygon | None:
    """Reprojects a polygon from the grid's CRS to EPSG:4326 as a valid MultiPolygon.

    Vertices are transformed exactly (lake outlines have a vertex every pixel edge, so no
    densification is needed); the result is repaired because rounding can make nearly touching
    rings cross. None when nothing polygonal is left.
    """
    tr = _to_lonlat(grid)
    ll = shapely.transform(geom_utm, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return _as_multipolygon(ll)


def _pixels_inside(poly: Polygon | MultiPolygon, grid: GridSpec) -> tuple[slice, slice, NDArray]:
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
    inside = rasterize(
        [(poly, 1)], out_shape=(r1 - r0, c1 - c0), transform=window_transform, dtype="uint8"
    ).astype(bool)
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
        over the same pixels (NaN if none is finite); geometry in EPSG:4326. Polygons with no
        area after repair are skipped.
    """
    prob = np.asarray(prob)
    dem = np.asarray(dem)
    if prob.shape != grid.shape or dem.shape != grid.shape:
        raise ValueError(f"prob {prob.shape} and dem {dem.shape} must match the grid {grid.shape}")
    tr = _to_lonlat(grid)
    lakes: list[ObservedLake] = []
    for raw in polygons_utm:
        poly = as_polygonal(raw)
        if poly is None or poly.area <= 0:
            continue
        geometry = to_lonlat_multipolygon(poly, grid)
        if geometry is None:
            continue
        rows, cols, inside = _pixels_inside(poly, grid)
        elev = dem[rows, cols][inside]
        p = prob[rows, cols][inside]
        elev, p = elev[np.isfinite(elev)], p[np.isfinite(p)]
        c = poly.centroid
        lon, lat = tr.transform(c.x, c.y)
        lakes.append(
            ObservedLake(
                geometry=geometry,
                area_m2=float(poly.area),
                perimeter_m=float(poly.length),
                centroid_lon=float(lon),
                centroid_lat=float(lat),
                elevation_m=float(np.median(elev)) if elev.size else None,
                mean_probability=float(p.mean()) if p.size else math.nan,
            )
        )
    return lakes


def valid_footprint(
    valid: NDArray[np.bool_], grid: GridSpec, simplify_m: float = 20.0
) -> MultiPolygon | None:
    """Outline of the valid pixels in EPSG:4326, holes (clouds, gaps) kept.

    Args:
        valid: bool ``(H, W)`` on ``grid``.
        grid: The scene grid.
        simplify_m: Douglas-Peucker tolerance in metres (topology preserved), applied in UTM.

    Returns:
        A valid MultiPolygon, or None when no pixel is valid.
    """
    from rasterio.features import shapes
    from shapely.geometry import shape

    v = np.asarray(valid, dtype=bool)
    if v.shape != grid.shape:
        raise ValueError(f"valid {v.shape} does not match the grid {grid.shape}")
    if not v.any():
        return None
    parts = [
        shape(g)
        for g, _ in shapes(v.astype(np.uint8), mask=v, connectivity=4, transform=grid.affine)
    ]
    merged = shapely.union_all(parts)
    if simplify_m > 0:
        merged = merged.simplify(simplify_m, preserve_topology=True)
    return to_lonlat_multipolygon(merged, grid)
