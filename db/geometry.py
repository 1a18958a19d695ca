"""Geometry and CRS helpers of the inventory (pure): UTM zones, repair, projection.

The one home of three things every layer needs:

* :func:`utm_epsg_for`: the UTM zone of a point (the scene grid's CRS, the importer's zones);
* :func:`as_multipolygon` / :func:`as_multipolygons`: repair into a valid 2-D MultiPolygon, the
  only geometry type the inventory stores (and :func:`as_polygonal`, its single-part form);
* :func:`metric_transformer`, :func:`project` (EPSG:4326 → UTM metres) and :func:`to_lonlat`
  (UTM → EPSG:4326): the transformations, exact per vertex (no densification: outlines have a
  vertex on every pixel edge), cached per CRS.

Coordinates are (x, y) = (lon, lat) in EPSG:4326 (``always_xy``). Imports nothing of the project
but :mod:`core`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from core.errors import InputError

LONLAT_EPSG = 4326
"""The storage CRS of every inventory geometry (SRID of the geometry columns)."""


def utm_epsg_for(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 UTM zone containing a point.

    Standard 6° zones; the Norway/Svalbard exceptions of MGRS are not applied, so a grid is
    always the plain zone of its longitude. ``lon`` = 180 falls in zone 60.

    Args:
        lon: Longitude, degrees (EPSG:4326).
        lat: Latitude, degrees; ≥ 0 gives the northern zone (326xx), < 0 the southern (327xx).

    Raises:
        ValueError: the point is not finite lon/lat.
    """
    if not (math.isfinite(lon) and math.isfinite(lat)) or abs(lat) > 90 or abs(lon) > 180:
        raise ValueError(f"not a lon/lat point: ({lon}, {lat})")
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


def as_multipolygon(geometry: BaseGeometry | None) -> MultiPolygon | None:
    """Repair a geometry into a valid 2-D MultiPolygon (polygonal parts only); None when empty.

    ``make_valid`` (structure method) can leave collections with stray lines or points where rings
    touched; those carry no area and are dropped, as are parts of zero area. Any CRS.
    """
    if geometry is None or geometry.is_empty:
        return None
    geometry = shapely.force_2d(geometry)
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry, method="structure", keep_collapsed=False)
    parts = [g for g in shapely.get_parts(geometry) if isinstance(g, (Polygon, MultiPolygon))]
    polygons = [p for g in parts for p in shapely.get_parts(g) if not p.is_empty and p.area > 0]
    if not polygons:
        return None
    result = MultiPolygon(polygons)
    return result if result.is_valid else as_multipolygon(shapely.make_valid(result, method="structure"))


def as_multipolygons(geometries: Sequence[BaseGeometry | None]) -> list[MultiPolygon | None]:
    """:func:`as_multipolygon` of each geometry, in bulk.

    Valid 2-D MultiPolygons whose parts all have an area are recognised at once and kept as they
    are (same object, same coordinates).
    """
    geoms = np.empty(len(geometries), dtype=object)
    geoms[:] = list(geometries)
    ok = (shapely.get_type_id(geoms) == 6) & ~shapely.is_empty(geoms) & ~shapely.has_z(geoms)
    ok &= shapely.is_valid(geoms) & (shapely.area(geoms) > 0)
    several = ok & (shapely.get_num_geometries(geoms) > 1)  # one part: its area is the whole's
    if several.any():
        parts, owner = shapely.get_parts(geoms[several], return_index=True)
        degenerate = shapely.is_empty(parts) | ~(shapely.area(parts) > 0)
        ok[np.flatnonzero(several)[np.unique(owner[degenerate])]] = False
    return [g if keep else as_multipolygon(g) for g, keep in zip(geoms.tolist(), ok.tolist(), strict=True)]


def as_polygonal(geometry: BaseGeometry | None) -> Polygon | MultiPolygon | None:
    """:func:`as_multipolygon`, with a single part returned as its Polygon; None when empty."""
    repaired = as_multipolygon(geometry)
    if repaired is None:
        return None
    return repaired.geoms[0] if len(repaired.geoms) == 1 else repaired


def check_metric(utm_epsg: int) -> CRS:
    """The CRS of ``utm_epsg``; InputError unless it is projected in metres."""
    crs = CRS.from_epsg(utm_epsg)
    if not crs.is_projected or crs.axis_info[0].unit_name not in ("metre", "meter"):
        raise InputError(f"utm_epsg {utm_epsg} is not a projected CRS in metres")
    return crs


@lru_cache(maxsize=16)
def metric_transformer(utm_epsg: int) -> Transformer:
    """EPSG:4326 → ``utm_epsg`` (lon/lat order); InputError unless it is projected in metres."""
    check_metric(utm_epsg)
    return Transformer.from_crs(LONLAT_EPSG, utm_epsg, always_xy=True)


@lru_cache(maxsize=16)
def lonlat_transformer(utm_epsg: int) -> Transformer:
    """``utm_epsg`` → EPSG:4326 (lon/lat order); InputError unless it is projected in metres."""
    check_metric(utm_epsg)
    return Transformer.from_crs(utm_epsg, LONLAT_EPSG, always_xy=True)


def _apply(geometries: Sequence[BaseGeometry], transformer: Transformer) -> np.ndarray:
    def _xy(coords: np.ndarray) -> np.ndarray:
        return np.column_stack(transformer.transform(coords[:, 0], coords[:, 1]))

    out: np.ndarray = shapely.transform(np.asarray(geometries, dtype=object), _xy)
    return out


def project(geometries: Sequence[BaseGeometry], utm_epsg: int) -> list[BaseGeometry]:
    """Project EPSG:4326 geometries to ``utm_epsg`` (metres); repaired if projection broke them."""
    if not len(geometries):
        return []
    out = _apply(geometries, metric_transformer(utm_epsg))
    bad = ~shapely.is_valid(out)
    out[bad] = shapely.make_valid(out[bad])
    return list(out)


def to_lonlat(geometries: Sequence[BaseGeometry], utm_epsg: int) -> list[MultiPolygon | None]:
    """UTM (``utm_epsg``, metres) outlines in EPSG:4326 as valid MultiPolygons (None: nothing left).

    Vertices are transformed exactly; the result is repaired (:func:`as_multipolygons`) because
    rounding can make nearly touching rings cross.
    """
    if not len(geometries):
        return []
    return as_multipolygons(list(_apply(geometries, lonlat_transformer(utm_epsg))))


def lonlat_bounds(geometries: Sequence[BaseGeometry | None], utm_epsg: int) -> tuple[float, float, float, float] | None:
    """The EPSG:4326 box (x0, y0, x1, y1, degrees) around geometries given in ``utm_epsg``; None if all empty.

    The UTM box's edges are densified before transforming, so the result contains every point
    of the geometries (a UTM box maps to a curved quadrilateral in lon/lat).
    """
    present = [g for g in geometries if g is not None and not g.is_empty]
    if not present:
        return None
    x0, y0, x1, y1 = shapely.total_bounds(present).tolist()
    b = lonlat_transformer(utm_epsg).transform_bounds(x0, y0, x1, y1, densify_pts=21)
    return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
