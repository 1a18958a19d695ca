"""The scene's footprint outline built a strip of rows at a time (memory set by the strip).

:func:`tasks.attribute.valid_footprint` outlines a whole mask at once: polygonise, union,
Douglas-Peucker with ``simplify_m``. :class:`StripFootprint` gives the same outline (within the
simplification) from strips: each strip's pixels are outlined and simplified on their own, with
the points where the outline meets the strip's edges pinned, so the simplified strips still meet
edge to edge at every seam (no slivers, no overlaps), and their union is the outline (only parts
reaching a strip's top or bottom edge take part in it).

Per strip the simplification is GEOS's coverage simplification (Visvalingam-Whyatt, tolerance
≈ the square root of the largest triangle area removed: :data:`VW_PER_DP` × ``simplify_m``) of the coverage
{outline, rest of the strip} with the coverage's boundary (the strip's rectangle) kept as it is:
edges shared by the outline and the rest are simplified, and their end nodes on the rectangle
stay where they are. Coordinates are the grid's CRS (UTM, metres).
"""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon, box, shape

from db.geometry import as_multipolygon
from tasks.grid import GridSpec, next_strip

__all__ = ["FOOTPRINT_SIMPLIFY_M", "VW_PER_DP", "StripFootprint"]

FOOTPRINT_SIMPLIFY_M = 20.0
"""Simplification tolerance of footprints, metres (two 10 m pixels)."""
VW_PER_DP = 2.0
"""Visvalingam-Whyatt tolerance per metre of Douglas-Peucker tolerance: at twice the distance, the
strips' outline has about as many vertices as the whole-mask Douglas-Peucker one and differs from
it no more (first 2048 px demo scene: 727 vertices against 683, 0.21 % of the area differing; at
1× it kept 1688)."""


class StripFootprint:
    """Outline of a bool mask fed as consecutive strips of rows (the dry-capable footprint).

    Args:
        grid: The scene grid (UTM, metres).
        simplify_m: Tolerance in metres; 0 keeps the pixel edges (then the result is exactly
            the whole-mask outline).
    """

    def __init__(self, grid: GridSpec, simplify_m: float = FOOTPRINT_SIMPLIFY_M) -> None:
        self.grid = grid
        self.simplify_m = simplify_m
        self._next_row = 0
        self._edge: list[Polygon] = []  # parts reaching a strip's top or bottom edge: may join others
        self._inner: list[Polygon] = []  # parts clear of both: final as they are

    def add(self, mask: NDArray[np.bool_], row0: int) -> None:
        """Feeds rows ``[row0, row0 + len(mask))`` of the mask (bool ``(r, W)``), top to bottom.

        Raises:
            ValueError: Not the next rows of the grid, or not its width.
        """
        from rasterio.features import shapes

        m = next_strip(mask, self.grid, self._next_row, row0)
        self._next_row = row0 + m.shape[0]
        if not m.any():
            return
        transform = self.grid.affine @ Affine.translation(0, row0)
        # GDAL's 4-connected parts of one value never share an edge: a MultiPolygon of them, no overlay.
        parts = [shape(g) for g, _ in shapes(m.astype(np.uint8), mask=m, connectivity=4, transform=transform)]
        outline: shapely.Geometry | None = as_multipolygon(MultiPolygon(parts))
        if outline is None:
            return
        if self.simplify_m > 0:
            left, top = transform @ (0, 0)
            right, bottom = transform @ (m.shape[1], m.shape[0])
            rest = box(min(left, right), min(top, bottom), max(left, right), max(top, bottom)).difference(outline)
            if not rest.is_empty:  # a full strip is its rectangle: nothing to simplify
                outline = shapely.coverage_simplify(
                    [outline, rest], VW_PER_DP * self.simplify_m, simplify_boundary=False
                )[0]
        # Only parts reaching the strip's top or bottom row can meet parts of another strip.
        y0, y1 = sorted((transform.f, (transform @ (0, m.shape[0]))[1]))
        half = abs(transform.e) / 2  # outlines follow pixel edges (simplifying only drops vertices)
        for part in shapely.get_parts(outline):
            _, miny, _, maxy = part.bounds
            (self._edge if miny <= y0 + half or maxy >= y1 - half else self._inner).append(part)

    def finish(self) -> MultiPolygon | None:
        """The outline: a valid MultiPolygon in the grid's CRS, holes kept; None: no pixel set.

        Raises:
            ValueError: Not every row of the grid was fed.
        """
        if self._next_row != self.grid.height:
            raise ValueError(f"fed rows 0..{self._next_row} of a grid of {self.grid.height}")
        if not self._edge and not self._inner:
            return None
        joined = list(shapely.get_parts(_dissolve_seams(self._edge))) if self._edge else []
        return as_multipolygon(MultiPolygon(joined + self._inner))


def _dissolve_seams(polygons: list[Polygon]) -> MultiPolygon:
    """The union of strips' parts that meet edge to edge, holes put back without an overlay.

    The parts all reach their strip's top or bottom edge, so none lies in another's hole (a hole
    is inside its strip, clear of its edges); their holes take no part in the seams. Only the
    shells are unioned (an overlay of few vertices), and each hole goes back into the part that
    contains it: the same result as ``union_all(polygons)``, without overlaying thousands of holes.
    """
    shells = [Polygon(p.exterior) for p in polygons]
    holes = [Polygon(ring) for p in polygons for ring in p.interiors]
    parts = list(shapely.get_parts(shapely.union_all(shells)))  # shells meet edge to edge: seams dissolve
    inner: list[list[shapely.LinearRing]] = [list(part.interiors) for part in parts]
    if holes:
        where, owner = shapely.STRtree(parts).query(shapely.point_on_surface(holes), predicate="within")
        for h, o in zip(where.tolist(), owner.tolist(), strict=True):
            inner[o].append(holes[h].exterior)
    return MultiPolygon([Polygon(part.exterior, rings) for part, rings in zip(parts, inner, strict=True)])
