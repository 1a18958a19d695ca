"""One scene's lakes and dry-capable footprint from its stack and probability, streamed by strips.

Two passes over strips of :data:`EXTRACT_STRIP_ROWS` rows, so memory is set by the strip height ×
the scene width (and by the largest lake), not by the scene's area:

1. **Vectorise**: per strip (with :data:`~tasks.validity.WATER_RING_PX` rows of halo above and
   below, which the water ring of the dry-capable mask needs), the probability, the valid mask and
   the dry-capable sidecar are read; water = probability > threshold ∧ valid is polygonised
   (:class:`tasks.vectorize.StripPolygoniser`: lakes crossing strip edges come out whole, the
   minimum area applied after stitching) and the dry-capable pixels
   (:func:`tasks.validity.dry_capable`) are outlined (:class:`tasks.footprint.StripFootprint`).
2. **Attribute**: each lake's window (its bounding box with
   :data:`~tasks.attribute.ATTRIBUTE_HALO_PX` pixels around) is assembled strip by strip: the
   probability read by that window, the DEM cut out of the stack's DEM band, read by strips of
   rows only where some lake's window lies; the lake is measured by
   :func:`tasks.attribute.measure_lake` as soon as its window is complete, then dropped.

The results equal the whole-raster stages (:func:`tasks.vectorize.mask_to_polygons`,
:func:`tasks.attribute.attribute_lakes`, :func:`tasks.attribute.valid_footprint`): the same
polygons and attributes, and the footprint within its simplification tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.windows import Window
from shapely.geometry import MultiPolygon, Polygon

from core.errors import RasterInputError
from db.records import ObservedLake
from tasks.attribute import ATTRIBUTE_HALO_PX, lake_window, measure_lake, window_grid
from tasks.footprint import StripFootprint
from tasks.grid import GridSpec
from tasks.stack import StackInfo, StackReader
from tasks.validity import WATER_RING_PX, dry_capable
from tasks.vectorize import StripPolygoniser, probability_to_mask

__all__ = ["EXTRACT_STRIP_ROWS", "ExtractedLakes", "extract_lakes"]

EXTRACT_STRIP_ROWS = 1024
"""Rows per strip (a multiple of the stacks' 256-row blocks, so each block is decoded once a
pass). Peak memory is about 30 bytes per pixel of one strip (about 340 MB for a 10 980 px wide
Sentinel-2 tile) plus the windows of the lakes crossing it."""


@dataclass(frozen=True)
class ExtractedLakes:
    """Lakes of one scene plus where the scene could see."""

    lakes: tuple[ObservedLake, ...]
    """Attributed outlines in the scene grid's UTM CRS (see ``ObservedLake``)."""
    footprint: MultiPolygon | None
    """Dry-capable footprint in the scene grid's UTM CRS (``SceneResult.utm_epsg``): where a known
    lake may be marked absent (:mod:`tasks.validity`). None when the cloud state is unknown (no SCL)
    or no pixel is dry-capable."""


def extract_lakes(
    stack_info: StackInfo,
    probability_path: Path,
    threshold: float,
    min_area_m2: float,
    *,
    strip_rows: int = EXTRACT_STRIP_ROWS,
) -> ExtractedLakes:
    """Threshold → polygons (UTM) → attributes (see ``tasks.attribute``), plus the dry-capable footprint.

    Lakes are mapped on the valid data; the footprint is the dry-capable mask of
    :func:`tasks.validity.dry_capable`: valid, cloud state known, not snow/ice, and no water pixel
    (of any size, sub-mapping-unit ones included) within one pixel.

    Reads only what it uses, a strip of ``strip_rows`` rows at a time (see the module): the
    probability (float32 0–1, NaN nodata), the valid and dry-capable masks and the stack's DEM
    band (metres). Lakes are ordered by their first pixel (row-major).

    Args:
        stack_info: The scene's stack (:func:`tasks.scene.prepare_stack`).
        probability_path: The water probability COG on the stack's grid.
        threshold: Water where probability > threshold.
        min_area_m2: Lakes smaller than this (m², holes subtracted) are dropped.
        strip_rows: Rows per strip (:data:`EXTRACT_STRIP_ROWS`); results do not depend on it.

    Raises:
        RasterInputError: The probability raster is not on the stack's grid (size, transform, CRS).
    """
    if strip_rows < 1:
        raise ValueError(f"strip_rows must be positive, got {strip_rows}")
    grid = stack_info.grid
    _check_probability(probability_path, grid)
    with StackReader(stack_info) as stack:
        polygons, footprint = _vectorise(stack, probability_path, grid, threshold, min_area_m2, strip_rows)
        lakes = _attribute(stack, probability_path, grid, polygons, strip_rows)
    return ExtractedLakes(lakes=tuple(lakes), footprint=footprint)


def _strips(height: int, strip_rows: int) -> list[tuple[int, int]]:
    return [(r0, min(height, r0 + strip_rows)) for r0 in range(0, height, strip_rows)]


def _vectorise(
    stack: StackReader, probability_path: Path, grid: GridSpec, threshold: float, min_area_m2: float, strip_rows: int
) -> tuple[list[Polygon | MultiPolygon], MultiPolygon | None]:
    """Pass 1: lake polygons and the dry-capable footprint (None: cloud state unknown or none)."""
    polygoniser = StripPolygoniser(grid, min_area_m2=min_area_m2)
    outline = StripFootprint(grid)
    known = stack.dry_capable_path is not None
    for r0, r1 in _strips(grid.height, strip_rows):
        # The water ring reaches WATER_RING_PX rows into the neighbouring strips.
        a, b = max(0, r0 - WATER_RING_PX), min(grid.height, r1 + WATER_RING_PX)
        core = slice(r0 - a, r1 - a)
        prob = _read_probability(probability_path, a, b)
        water = probability_to_mask(prob, threshold) & stack.read_valid(rows=(a, b))
        polygoniser.add(water[core], r0)
        before_water = stack.read_dry_capable(rows=(a, b)) if known else None
        seen_dry = dry_capable(before_water, water, prob)  # None: the cloud state is unknown
        if seen_dry is not None:
            outline.add(seen_dry[core], r0)
        del prob, water
    return polygoniser.finish(), outline.finish() if known else None


def _attribute(
    stack: StackReader,
    probability_path: Path,
    grid: GridSpec,
    polygons: list[Polygon | MultiPolygon],
    strip_rows: int,
) -> list[ObservedLake]:
    """Pass 2: each lake measured on its window, the windows cut from strips read only where needed."""
    windows = [lake_window(poly, grid, ATTRIBUTE_HALO_PX) for poly in polygons]
    order = sorted(range(len(polygons)), key=lambda i: windows[i][0])
    lakes: list[ObservedLake | None] = [None] * len(polygons)
    open_: dict[int, tuple[NDArray[np.float32], NDArray[np.float32]]] = {}
    nxt = 0
    for s0, s1 in _strips(grid.height, strip_rows):
        while nxt < len(order) and windows[order[nxt]][0] < s1:
            i = order[nxt]
            r0, r1, c0, c1 = windows[i]
            open_[i] = (np.empty((r1 - r0, c1 - c0), np.float32), np.empty((r1 - r0, c1 - c0), np.float32))
            nxt += 1
        if not open_:
            continue  # no lake here: nothing to read
        dem = stack.read_band("DEM", rows=(s0, s1))  # the stack is read by rows (its reader's API)
        with rasterio.open(probability_path) as prob:  # closed per strip: GDAL's block cache goes too
            for i in list(open_):
                r0, r1, c0, c1 = windows[i]
                lo, hi = max(r0, s0), min(r1, s1)
                prob_w, dem_w = open_[i]
                # The probability by the lake's own window: only the blocks it touches are decoded.
                prob.read(1, window=Window(c0, lo, c1 - c0, hi - lo), out=prob_w[lo - r0 : hi - r0])
                dem_w[lo - r0 : hi - r0] = dem[lo - s0 : hi - s0, c0:c1]
                if r1 <= s1:  # complete: measure and let go
                    lakes[i] = measure_lake(polygons[i], prob_w, dem_w, window_grid(grid, windows[i]))
                    del open_[i]
        del dem
    return [lake for lake in lakes if lake is not None]


def _check_probability(path: Path, grid: GridSpec) -> None:
    """The probability raster must be on the stack's grid (else pixels would be read at wrong places)."""
    with rasterio.open(path) as ds:
        same_place = np.allclose(tuple(ds.transform)[:6], grid.transform, rtol=0.0, atol=1e-3)  # metres
        epsg = ds.crs.to_epsg() if ds.crs is not None else None
        if (ds.height, ds.width) != grid.shape or not same_place or epsg != grid.epsg:
            raise RasterInputError(
                f"{path}: probability raster {ds.width}x{ds.height} (EPSG:{epsg}) is not on the stack's grid "
                f"{grid.width}x{grid.height} (EPSG:{grid.epsg}; same size, transform and CRS needed)"
            )


def _read_probability(path: Path, row0: int, row1: int) -> NDArray[np.float32]:
    """Rows ``[row0, row1)`` of the probability (float32 0–1, NaN nodata), the file closed again.

    Closing frees GDAL's block cache of the file, which would otherwise keep every decoded block
    of the scene resident.
    """
    with rasterio.open(path) as ds:
        out: NDArray[np.float32] = ds.read(1, window=Window(0, row0, ds.width, row1 - row0), out_dtype="float32")
    return out
