"""Probability → binary mask → lake polygons in the grid's UTM CRS.

Connectivity is 4 (edge-sharing pixels only), as in CryoSentinel's polygoniser and
``scipy.ndimage.label``'s default: GDAL then writes simple rings, diagonal-only contacts make
separate lakes, and one-pixel land bridges stay as holes or gaps. No smoothing or
simplification: outlines follow pixel edges, so mask → polygons → rasterise is exact.

:class:`StripPolygoniser` gives the same polygons from a mask fed a strip of rows at a time (memory
set by the strip, not the scene): each strip is labelled and polygonised on its own, components
that touch across a seam (a water pixel directly above a water pixel: 4-connectivity) are joined
by union-find, and their pieces dissolved into one polygon once the scene is done; the minimum
area is applied to the whole lake, after the stitching.
"""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from numpy.typing import NDArray
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon, shape

from db.geometry import as_polygonal  # the one repair (re-exported: the pipeline's name for it)
from tasks.defaults import MIN_LAKE_AREA_M2, WATER_THRESHOLD
from tasks.grid import GridSpec, next_strip

__all__ = [
    "MIN_LAKE_AREA_M2",
    "StripPolygoniser",
    "as_polygonal",
    "mask_to_polygons",
    "probability_to_mask",
]

_FOUR = ndimage.generate_binary_structure(2, 1)
"""4-connectivity (edge-sharing pixels), the polygoniser's: labels and GDAL must agree."""


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


class StripPolygoniser:
    """:func:`mask_to_polygons` of a mask fed as consecutive strips of rows, top to bottom.

    Each strip is labelled (4-connectivity) and polygonised; a component touching no seam is a
    whole lake at once (kept if it reaches ``min_area_m2``). Pieces touching a seam wait: the
    strip below joins the components whose pixels meet across the seam (union-find), and
    :meth:`finish` dissolves each group's pieces (their shared seam edges vanish) into one
    polygon, then applies the minimum area. Memory: one strip's rasters, the polygons, and one
    row of labels.

    Args:
        grid: The scene grid (UTM, metres); strips are rows of it.
        min_area_m2: Lakes with a smaller area (holes subtracted) are dropped, after stitching.
    """

    def __init__(self, grid: GridSpec, *, min_area_m2: float = MIN_LAKE_AREA_M2) -> None:
        self.grid = grid
        self.min_area_m2 = min_area_m2
        self._next_row = 0
        self._next_id = 1
        self._seam: NDArray[np.int64] | None = None  # ids of the last row fed (0: dry)
        self._parent: dict[int, int] = {}
        self._pending: dict[int, Polygon | MultiPolygon] = {}  # pieces touching a seam, by id
        self._done: list[tuple[int, Polygon | MultiPolygon]] = []  # (first pixel's id, lake)

    def add(self, mask: NDArray[np.bool_], row0: int) -> None:
        """Feeds rows ``[row0, row0 + len(mask))`` of the water mask (bool ``(r, W)``).

        Raises:
            ValueError: Not the next rows of the grid, or not its width.
        """
        m = next_strip(mask, self.grid, self._next_row, row0)
        if row0 + m.shape[0] > self.grid.height:
            raise ValueError(f"strip at rows {row0}..{row0 + m.shape[0]} runs past the grid ({self.grid.height})")
        self._next_row = row0 + m.shape[0]
        labels, n = ndimage.label(m, structure=_FOUR)
        base = self._next_id - 1  # label k of this strip has the id base + k
        self._next_id += n
        top, bottom = (np.where(row > 0, row.astype(np.int64) + base, 0) for row in (labels[0], labels[-1]))
        if self._seam is not None:  # join the components that touch across the seam above
            meet = (self._seam > 0) & (top > 0)
            for a, b in np.unique(np.stack([self._seam[meet], top[meet]]), axis=1).T:
                self._union(int(a), int(b))
        at_top = set(np.unique(top).tolist()) if row0 > 0 else set()
        last = self._next_row == self.grid.height
        at_bottom = set() if last else set(np.unique(bottom).tolist())
        self._seam = None if last else bottom
        if not n:
            return
        from rasterio.features import shapes

        transform = self.grid.affine @ Affine.translation(0, row0)
        for geojson, value in shapes(labels.astype(np.int32), mask=m, connectivity=4, transform=transform):
            poly = as_polygonal(shape(geojson))
            if poly is None:
                continue
            gid = int(value) + base
            if gid in at_top or gid in at_bottom:
                self._pending[gid] = poly
            elif poly.area >= self.min_area_m2:
                self._done.append((gid, poly))

    def finish(self) -> list[Polygon | MultiPolygon]:
        """The lakes: valid polygons in the grid's CRS (``grid.epsg``), holes kept.

        Ordered by each lake's first pixel in row-major order (deterministic for a given mask,
        whatever the strip height).

        Raises:
            ValueError: Not every row of the grid was fed.
        """
        if self._next_row != self.grid.height:
            raise ValueError(f"fed rows 0..{self._next_row} of a grid of {self.grid.height}")
        groups: dict[int, list[int]] = {}
        for gid in sorted(self._pending):
            groups.setdefault(self._find(gid), []).append(gid)
        lakes = list(self._done)
        for members in groups.values():
            pieces = [self._pending[g] for g in members]
            # Pieces follow pixel edges, so the union is exact: seam edges cancel, areas add up.
            poly = as_polygonal(pieces[0] if len(pieces) == 1 else shapely.union_all(pieces))
            if poly is not None and poly.area >= self.min_area_m2:
                lakes.append((members[0], poly))
        return [poly for _, poly in sorted(lakes, key=lambda item: item[0])]

    def _find(self, gid: int) -> int:
        root = gid
        while (up := self._parent.get(root, root)) != root:
            root = up
        while gid != root:  # path compression: later look-ups are one step
            self._parent[gid], gid = root, self._parent.get(gid, gid)
        return root

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)
