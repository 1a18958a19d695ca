"""The scene grid: a north-up UTM raster grid (10 m by default) that every input is warped onto.

A :class:`GridSpec` is a small frozen value (EPSG code, affine coefficients, size), so it can be
passed between tasks and hashed into cache keys. Coordinates are metres in the grid's UTM CRS;
``transform`` maps pixel corners (column, row) to (x, y) like every GDAL geotransform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from numpy.typing import ArrayLike, NDArray
from pyproj import Transformer
from rasterio.crs import CRS
from shapely.geometry.base import BaseGeometry

from core.errors import AoiError
from db.geometry import utm_epsg_for  # its one home; re-exported here for the pipeline

__all__ = [
    "MAX_GRID_PIXELS",
    "MIN_GRID_SIDE_PX",
    "GridSpec",
    "grid_for_geometry",
    "grid_for_projected",
    "next_strip",
    "project_lonlat",
    "read_grid",
    "utm_epsg_for",
]

GRID_MEMORY_BUDGET_BYTES = 4 * 1024**3
"""Memory one scene may take at its peak (4 GiB), the figure the grid cap is derived from."""
PEAK_BYTES_PER_PIXEL = 24
"""Peak resident memory of the streaming pipeline per grid pixel: lake extraction holds the
probability (float32), DEM (float32) and valid mask of the whole grid plus its labels (0.4 GB
measured on a 4096 × 4096 px scene, ≈ 24 B/px); the other stages stream one block row at a time."""
MAX_GRID_PIXELS = GRID_MEMORY_BUDGET_BYTES // PEAK_BYTES_PER_PIXEL
"""Largest scene grid, pixels (178 956 970: about 134 km × 134 km at 10 m)."""

MIN_GRID_SIDE_PX = 256
"""Fewest pixels a side of an AOI part's grid has (2.56 km at 10 m): a smaller AOI is processed on
a grid of this side centred on it, so the segmenter sees real ground around the AOI instead of
its own pixels mirrored (a window of uniform lake is no lake to the model: it needs shore
context). Change together: at least the TerraMind window (``models.inference``, 224 px) plus a
margin; ``tests/unit/test_zones.py`` checks it against the default window."""


@dataclass(frozen=True)
class GridSpec:
    """A north-up raster grid in a projected CRS.

    Attributes:
        epsg: EPSG code of the CRS (UTM north 326xx / south 327xx for scene grids).
        transform: Affine coefficients ``(a, b, c, d, e, f)``: x = a·col + b·row + c,
            y = d·col + e·row + f, in CRS units (metres), for pixel corners.
        width: Columns.
        height: Rows.
    """

    epsg: int
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    def __post_init__(self) -> None:
        """Checks the size and normalises the coefficients to floats."""
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"grid size must be positive, got {self.width}x{self.height}")
        if len(self.transform) != 6:
            raise ValueError("transform needs the six affine coefficients a, b, c, d, e, f")
        # Normalise to plain floats so equal grids compare and hash equal.
        object.__setattr__(self, "transform", tuple(float(v) for v in self.transform))

    @classmethod
    def from_affine(cls, epsg: int, affine: Affine, width: int, height: int) -> GridSpec:
        """Builds a grid from an :class:`affine.Affine` (only its first six coefficients)."""
        return cls(int(epsg), tuple(affine)[:6], int(width), int(height))

    @property
    def affine(self) -> Affine:
        """The transform as :class:`affine.Affine`."""
        return Affine(*self.transform)

    @property
    def crs(self) -> CRS:
        """The CRS as a rasterio :class:`~rasterio.crs.CRS`."""
        return CRS.from_epsg(self.epsg)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``, the numpy shape of one band."""
        return (self.height, self.width)

    @property
    def resolution(self) -> float:
        """Pixel size in metres (the grid is square-pixelled and north-up)."""
        return abs(self.transform[0])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in CRS metres."""
        a, b, c, d, e, f = self.transform
        xs = (c, c + a * self.width, c + b * self.height, c + a * self.width + b * self.height)
        ys = (f, f + d * self.width, f + e * self.height, f + d * self.width + e * self.height)
        return (min(xs), min(ys), max(xs), max(ys))


def grid_for_geometry(
    geom_lonlat: BaseGeometry,
    epsg: int | None = None,
    resolution: float = 10.0,
    max_pixels: int = MAX_GRID_PIXELS,
    min_side_px: int = 1,
) -> GridSpec:
    """The smallest north-up grid in a UTM CRS that covers a lon/lat geometry.

    The edges are snapped outwards to multiples of ``resolution`` so grids of different AOIs in
    one zone share pixel boundaries (and the Sentinel-2 10 m grid, whose origins are multiples
    of 10 m).

    This is the grid of one AOI part; an AOI that crosses UTM zones is first cut into one part
    per zone (:func:`tasks.zones.partition_aoi`).

    Args:
        geom_lonlat: Geometry in EPSG:4326 (lon, lat).
        epsg: Target CRS; by default the UTM zone of the geometry's centroid.
        resolution: Pixel size, metres.
        max_pixels: Largest grid accepted (width × height); by default :data:`MAX_GRID_PIXELS`,
            from the pipeline's 4 GiB memory budget.
        min_side_px: Fewest pixels a side: a narrower side is widened about the geometry's
            centre (the pipeline's AOI grids use :data:`MIN_GRID_SIDE_PX`).

    Raises:
        core.errors.AoiError: the grid would exceed ``max_pixels``.
    """
    if geom_lonlat.is_empty:
        raise ValueError("cannot build a grid for an empty geometry")
    if epsg is None:
        c = geom_lonlat.centroid
        epsg = utm_epsg_for(c.x, c.y)
    return grid_for_projected(project_lonlat(geom_lonlat, epsg), epsg, resolution, max_pixels, min_side_px=min_side_px)


def project_lonlat(geom_lonlat: BaseGeometry, epsg: int) -> BaseGeometry:
    """An EPSG:4326 geometry in ``epsg`` (metres), its edges densified first (0.005°).

    Straight edges in degrees are curves in UTM: the projected outline must follow the curve, not
    only the vertices, so that bounds taken from it cover the whole geometry.
    """
    dense = shapely.segmentize(geom_lonlat, max_segment_length=0.005)
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)
    return shapely.transform(dense, lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1])))


def grid_for_projected(
    geom_m: BaseGeometry,
    epsg: int,
    resolution: float = 10.0,
    max_pixels: int = MAX_GRID_PIXELS,
    what: str = "AOI",
    min_side_px: int = 1,
) -> GridSpec:
    """The smallest north-up grid of ``resolution`` metres covering a geometry given in ``epsg`` metres.

    Edges snapped outwards to multiples of ``resolution`` (see :func:`grid_for_geometry`); a side
    of fewer than ``min_side_px`` pixels is widened to that many, evenly on both ends (the odd
    pixel on the right or bottom), so the geometry stays at the grid's centre.

    Raises:
        core.errors.AoiError: the grid would exceed ``max_pixels``; the message names ``what``.
    """
    if geom_m.is_empty:
        raise ValueError("cannot build a grid for an empty geometry")
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    minx, miny, maxx, maxy = geom_m.bounds
    left = math.floor(minx / resolution) * resolution
    bottom = math.floor(miny / resolution) * resolution
    right = math.ceil(maxx / resolution) * resolution
    top = math.ceil(maxy / resolution) * resolution
    # A point or a line along a pixel edge still needs one pixel.
    width = max(1, round((right - left) / resolution))
    height = max(1, round((top - bottom) / resolution))
    if width < min_side_px:
        left -= (min_side_px - width) // 2 * resolution
        width = min_side_px
    if height < min_side_px:
        top += (min_side_px - height) // 2 * resolution
        height = min_side_px
    if width * height > max_pixels:
        raise AoiError(
            f"{what} needs a {width} x {height} px grid at {resolution:g} m ({width * height / 1e6:.0f} M px), "
            f"over the {max_pixels / 1e6:.0f} M px a scene may have ({GRID_MEMORY_BUDGET_BYTES // 1024**3} GiB "
            "budget): split it into several AOIs"
        )
    return GridSpec(int(epsg), (resolution, 0.0, left, 0.0, -resolution, top), width, height)


# --- I/O -------------------------------------------------------------------------------------


def read_grid(href: str) -> GridSpec:
    """The grid of an existing raster (for example, to co-register onto a given S2 file).

    Raises:
        ValueError: The raster has no CRS, no EPSG code, or is not north-up.
    """
    import rasterio

    with rasterio.open(href) as ds:
        if ds.crs is None:
            raise ValueError(f"{href}: raster has no CRS")
        epsg = ds.crs.to_epsg()
        if epsg is None:
            raise ValueError(f"{href}: CRS has no EPSG code: {ds.crs.to_string()}")
        t = ds.transform
        if t.b != 0 or t.d != 0 or t.e >= 0:
            raise ValueError(f"{href}: grid is not north-up: {tuple(t)[:6]}")
        return GridSpec.from_affine(epsg, t, ds.width, ds.height)


def next_strip(mask: ArrayLike, grid: GridSpec, next_row: int, row0: int) -> NDArray[np.bool_]:
    """``mask`` as the bool ``(r, W)`` strip of ``grid`` that starts at ``row0``, checked to be the next one.

    The one check of the stages fed a scene top to bottom by strips (``tasks.vectorize``,
    ``tasks.footprint``): the strip has the grid's width and starts where the last one ended.

    Raises:
        ValueError: Not the next rows of the grid, or not its width.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2 or m.shape[1] != grid.width or row0 != next_row:
        raise ValueError(f"strip {m.shape} at row {row0} is not the grid's next rows (row {next_row})")
    return m
