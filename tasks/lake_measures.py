"""Per-lake measurements beyond area and centroid (pure functions, no I/O).

Everything is measured in the grid's projected CRS (UTM metres), never in degrees:

* :func:`smoothed_perimeter`: the shore length of an outline traced along pixel edges, without
  the staircase. Method: corner cutting at the edge midpoints, capped at one pixel from each
  corner. A pixel-edge outline is a sequence of horizontal and vertical runs; each run is cut at
  ``min(length / 2, pixel)`` from both ends and the cut points are joined. On a digital straight
  line made of runs of up to two pixels this is the chord length exactly (the midpoints of
  consecutive runs lie on the line); a long straight shore keeps its length but for the one-pixel
  cut at its corners (a 1 km square: −0.6 %). On a rasterised disc it is within 2 % of 2πr where
  the staircase is 4/π (+27 %) too long (``tests/unit/test_lake_measures.py``).
* :func:`area_uncertainty`: ±half a pixel across the whole pixel outline: ``0.5 × pixel ×
  staircase length`` (m²), i.e. half the area of the boundary pixels (as Hanshaw & Bookhagen 2014
  and the inventories that follow them, e.g. Wang et al. 2020, state their area error).
* :func:`surrounding_slope`: mean terrain slope (degrees) of the DEM in a ring around the lake,
  0–:data:`SLOPE_RING_M` metres outside its outline.
* :func:`probability_entropy`: mean binary entropy of the water probability inside the lake
  (bits, 0 certain … 1 maximally uncertain).
* :func:`lake_volume` (from :mod:`db.volume`, which imported inventories use too): volume from
  area by the area–volume scaling of Cook & Quincey (2015), with an uncertainty.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from shapely.geometry import LinearRing, MultiPolygon, Polygon

from db.volume import VOLUME_CROSS_CHECK, VOLUME_RELATION, VolumeRelation, lake_volume
from tasks.grid import GridSpec

__all__ = [
    "SLOPE_RING_M",
    "VOLUME_CROSS_CHECK",
    "VOLUME_RELATION",
    "VolumeRelation",
    "area_uncertainty",
    "lake_volume",
    "probability_entropy",
    "smoothed_perimeter",
    "surrounding_slope",
]

SLOPE_RING_M = 200.0
"""Outer radius of the ring (metres outside the outline) over which the surrounding slope is averaged."""


def _ring_smoothed_length(ring: LinearRing, pixel_m: float) -> float:
    pts = np.asarray(ring.coords, dtype=float)[:-1]
    if len(pts) < 3:
        return float(ring.length)
    # Drop vertices where the outline runs straight on (repairs can add them): a run is one edge.
    prev, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
    a, b = pts - prev, nxt - pts
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    straight = (np.abs(cross) <= 1e-9 * (np.hypot(*a.T) * np.hypot(*b.T) + 1e-30)) & ((a * b).sum(axis=1) > 0)
    pts = pts[~straight]
    if len(pts) < 3:
        return float(ring.length)
    d = np.roll(pts, -1, axis=0) - pts
    length = np.hypot(d[:, 0], d[:, 1])[:, None]
    f = np.minimum(0.5, pixel_m / np.maximum(length, 1e-12))
    cut = np.stack([pts + f * d, pts + (1 - f) * d], axis=1).reshape(-1, 2)
    step = np.roll(cut, -1, axis=0) - cut
    return float(np.hypot(step[:, 0], step[:, 1]).sum())


def smoothed_perimeter(poly: Polygon | MultiPolygon, pixel_m: float) -> float:
    """Perimeter (m) of the smoothed outline, holes' rings included (islands have shores).

    Args:
        poly: Outline in a projected CRS (metres), traced along pixel edges.
        pixel_m: Pixel size of the raster it was traced from (m), > 0.

    Returns:
        Sum over the rings of the length after corner cutting (module docstring).
    """
    if not pixel_m > 0:
        raise ValueError(f"pixel size must be positive, got {pixel_m}")
    parts = poly.geoms if isinstance(poly, MultiPolygon) else [poly]
    return sum(_ring_smoothed_length(r, pixel_m) for p in parts for r in (p.exterior, *p.interiors))


def area_uncertainty(poly: Polygon | MultiPolygon, pixel_m: float) -> float:
    """Area uncertainty (± m²): half a pixel across the pixel outline, ``0.5 · pixel_m · length``.

    ``poly.length`` is the staircase length (holes included): each boundary pixel's edge may be
    half a pixel in or out.
    """
    if not pixel_m > 0:
        raise ValueError(f"pixel size must be positive, got {pixel_m}")
    return 0.5 * pixel_m * float(poly.length)


def _window(geom: Polygon | MultiPolygon, grid: GridSpec, halo_px: int) -> tuple[slice, slice, GridSpec] | None:
    """Rows, columns and the sub-grid of ``grid`` covering ``geom``'s bounds plus ``halo_px`` pixels."""
    inv = ~grid.affine
    minx, miny, maxx, maxy = geom.bounds
    cols, rows = zip(*(inv @ (x, y) for x in (minx, maxx) for y in (miny, maxy)), strict=True)
    r0, r1 = max(0, math.floor(min(rows)) - halo_px), min(grid.height, math.ceil(max(rows)) + halo_px)
    c0, c1 = max(0, math.floor(min(cols)) - halo_px), min(grid.width, math.ceil(max(cols)) + halo_px)
    if r1 <= r0 or c1 <= c0:
        return None
    sub = GridSpec.from_affine(grid.epsg, grid.affine @ grid.affine.translation(c0, r0), c1 - c0, r1 - r0)
    return slice(r0, r1), slice(c0, c1), sub


def surrounding_slope(
    poly: Polygon | MultiPolygon, dem: NDArray[np.floating], grid: GridSpec, ring_m: float = SLOPE_RING_M
) -> float | None:
    """Mean slope (degrees) of the DEM in the ring 0–``ring_m`` metres outside the lake.

    Slope per pixel from central differences of the DEM (m) over the pixel spacing (m); the mean
    over the pixels whose centres lie in ``poly.buffer(ring_m) − poly`` and whose slope is finite.

    Args:
        poly: Lake outline in ``grid``'s CRS (metres).
        dem: Elevation ``(H, W)`` in metres on ``grid``, NaN nodata (a window of the scene will do,
            with its own grid); the ring is clipped to it.
        grid: The DEM's grid (projected, metres).
        ring_m: Outer distance of the ring from the outline, m.

    Returns:
        Degrees 0–90, or None where no ring pixel has a finite slope (DEM nodata, ring off the grid).
    """
    from rasterio.features import rasterize

    z = np.asarray(dem, dtype=np.float64)
    if z.shape != grid.shape:
        raise ValueError(f"dem {z.shape} must match the grid {grid.shape}")
    ring = poly.buffer(ring_m).difference(poly)
    window = _window(ring, grid, halo_px=1)
    if window is None or ring.is_empty:
        return None
    rows, cols, sub = window
    zw = z[rows, cols]
    if min(zw.shape) < 2:
        return None
    a, _, _, _, e, _ = grid.transform[:6]
    dz_dy, dz_dx = np.gradient(zw, abs(e), abs(a))
    slope = np.degrees(np.arctan(np.hypot(dz_dx, dz_dy)))
    inside = rasterize([(ring, 1)], out_shape=sub.shape, transform=sub.affine, dtype="uint8").astype(bool)
    values = slope[inside & np.isfinite(slope)]
    return float(values.mean()) if values.size else None


def probability_entropy(prob: NDArray[np.floating], inside: NDArray[np.bool_]) -> float:
    """Mean binary entropy (bits, 0–1) of the water probability over the ``inside`` pixels.

    ``H(p) = −p·log₂p − (1−p)·log₂(1−p)``, 0 at p ∈ {0, 1}, 1 at p = 0.5. NaN probabilities
    (nodata) are left out; NaN when no inside pixel has one (as the mean probability).
    """
    p = np.asarray(prob, dtype=np.float64)[np.asarray(inside, dtype=bool)]
    p = np.clip(p[np.isfinite(p)], 0.0, 1.0)
    if not p.size:
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log2(p), 0.0) + np.where(p < 1, (1 - p) * np.log2(1 - p), 0.0))
    return float(h.mean())
