"""Probability → binary mask → lake polygons in the grid's UTM CRS.

Connectivity is 4 (edge-sharing pixels only), as in CryoSentinel's polygoniser and
``scipy.ndimage.label``'s default: GDAL then writes simple rings, diagonal-only contacts make
separate lakes, and one-pixel land bridges stay as holes or gaps. No smoothing or
simplification: outlines follow pixel edges, so mask → polygons → rasterise is exact.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon, shape

from db.geometry import as_polygonal  # the one repair (re-exported: the pipeline's name for it)
from tasks.defaults import MIN_LAKE_AREA_M2, WATER_THRESHOLD
from tasks.grid import GridSpec

__all__ = ["MIN_LAKE_AREA_M2", "as_polygonal", "mask_to_polygons", "probability_to_mask"]


def probability_to_mask(prob: NDArray[np.floating], threshold: float = WATER_THRESHOLD) -> NDArray[np.bool_]:
    """Water where ``prob > threshold``; NaN (nodata) is never water."""
    with np.errstate(invalid="ignore"):
        return np.asarray(prob) > threshold


def mask_to_polygons(
    mask: NDArray[np.bool_],
    grid: GridSpec,
    *,
    min_area_m2: float = MIN_LAKE_AREA_M2,
    valid: NDArray[np.bool_] | None = None,
) -> list[Polygon | MultiPolygon]:
    """Vectorises a water mask into lake polygons, holes (islands) kept.

    Args:
        mask: bool ``(H, W)`` on ``grid``.
        grid: The mask's grid (UTM, metres).
        min_area_m2: Polygons with a smaller area (holes subtracted) are dropped.
        valid: Optional bool ``(H, W)``; water outside it is ignored.

    Returns:
        Valid polygons in the grid's CRS (``grid.epsg``), in the order GDAL emits them
        (deterministic for a given mask).
    """
    from rasterio.features import shapes

    m = np.asarray(mask, dtype=bool)
    if m.shape != grid.shape:
        raise ValueError(f"mask {m.shape} does not match the grid {grid.shape}")
    if valid is not None:
        if valid.shape != grid.shape:
            raise ValueError(f"valid {valid.shape} does not match the grid {grid.shape}")
        m = m & valid
    if not m.any():
        return []
    out: list[Polygon | MultiPolygon] = []
    for geojson, _ in shapes(m.astype(np.uint8), mask=m, connectivity=4, transform=grid.affine):
        poly = as_polygonal(shape(geojson))
        if poly is not None and poly.area >= min_area_m2:
            out.append(poly)
    return out
