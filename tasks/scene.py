"""One scene's raster stages: prepare the analysis-ready stack, extract attributed lakes.

Each stage takes and returns small things (plans, paths, frozen records), so a scheduler can
persist results cheaply; rasters live in files under the data root. The Prefect wrappers of
these stages are in ``flows.tasks``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon

from core.errors import RasterInputError
from db.records import ObservedLake
from tasks.attribute import attribute_lakes, valid_footprint
from tasks.coregister import align
from tasks.dem import read_dem_tiles
from tasks.grid import GridSpec
from tasks.pairing import ScenePlan
from tasks.preprocess import S2_BANDS, read_s2
from tasks.s1_read import read_s1_acquisition
from tasks.stack import StackInfo, StackReader, stack_arrays, write_stack
from tasks.vectorize import mask_to_polygons, probability_to_mask

__all__ = ["ExtractedLakes", "extract_lakes", "prepare_stack"]


def prepare_stack(plan: ScenePlan, grid: GridSpec, out_dir: Path) -> StackInfo:
    """Reads, harmonises and co-registers S2 + S1 + DEM onto ``grid``; writes the 15-band stack.

    The DEM is one tile or a mosaic of the plan's tiles (:func:`tasks.dem.read_dem_tiles`). S1
    and the DEM are measured against S2 by phase correlation and re-warped only for a confident
    offset (:func:`tasks.coregister.align`); the measurement is in the result's ``quality``.

    Holds the whole stack in memory once (15 × H × W float32) while it is assembled and written.

    Raises:
        RasterInputError: an input leaves no valid pixel on the grid (wrong CRS, no overlap, only
            nodata; the file is named), or the three have data on no common pixel (all named).
            A scene so raised is never merged: a clouded scene still is (cloud is an observation).
    """
    s2_bands = {k: v for k, v in plan.s2.assets if k != "SCL"}
    scl = plan.s2.asset_map.get("SCL")
    s2 = read_s2(s2_bands, scl, plan.s2.processing_baseline or "00.00", grid)
    s1 = read_s1_acquisition(plan.s1, grid).backscatter  # RTC γ⁰ / GRD σ⁰ by what it is; logs the decision
    dem = read_dem_tiles(plan.dem_hrefs, grid)  # one tile, or a mosaic across tile edges
    s1, dem, coreg = align(  # measured against S2 always; corrected only when confident
        s2.reflectance[S2_BANDS.index("B08")],
        s2.clear,
        s1,
        dem,
        grid,
        read_s1=lambda g: read_s1_acquisition(plan.s1, g).backscatter,
        read_dem=lambda g: read_dem_tiles(plan.dem_hrefs, g),
    )
    stack, valid = stack_arrays(s2, s1, dem)
    if not valid.any() and not _common_data(stack).any():  # cloud alone is an observation; no data is not
        raise RasterInputError(
            f"scene {plan.scene_id}: S2 {plan.s2.product_id}, S1 {plan.s1.asset('vv')} and DEM "
            f"{', '.join(plan.dem_hrefs)} have data on no common pixel of the AOI grid (EPSG:{grid.epsg})"
        )
    info = write_stack(stack, valid, grid, out_dir, plan.scene_id, cloud_fraction=s2.cloud_fraction)
    return replace(info, quality=tuple(coreg.as_inputs().items()))


def _common_data(stack: NDArray[np.float32]) -> NDArray[np.bool_]:
    """Where every band of the stack has data, one band at a time (one H × W mask, not 15)."""
    common: NDArray[np.bool_] = np.isfinite(stack[0])
    for band in stack[1:]:
        common &= np.isfinite(band)
    return common


@dataclass(frozen=True)
class ExtractedLakes:
    """Lakes of one scene plus where the scene could see."""

    lakes: tuple[ObservedLake, ...]
    """Attributed outlines in the scene grid's UTM CRS (see ``ObservedLake``)."""
    footprint: MultiPolygon | None
    """Valid footprint in the scene grid's UTM CRS (``SceneResult.utm_epsg``); None if nothing was valid."""


def extract_lakes(
    stack_info: StackInfo, probability_path: Path, threshold: float, min_area_m2: float
) -> ExtractedLakes:
    """Threshold → polygons (UTM) → attributes (see ``tasks.attribute``), plus the valid footprint.

    Reads only what it uses: the probability (float32 0–1, NaN nodata), the valid mask and the
    stack's DEM band (metres), so memory is a few single-band rasters, not the 15-band stack.
    """
    with StackReader(stack_info) as stack:
        valid = stack.read_valid()
        dem = stack.read_band("DEM")
    grid = stack_info.grid
    with rasterio.open(probability_path) as src:
        prob = src.read(1).astype(np.float32)
    mask = probability_to_mask(prob, threshold) & valid
    polygons = mask_to_polygons(mask, grid, min_area_m2=min_area_m2, valid=valid)
    del mask  # the polygons carry it from here; one band less at the peak of the attributes
    lakes = attribute_lakes(polygons, prob, dem, grid)
    return ExtractedLakes(lakes=tuple(lakes), footprint=valid_footprint(valid, grid))
