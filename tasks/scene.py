"""One scene's raster stages: prepare the analysis-ready stack, extract attributed lakes.

``extract_lakes`` (streamed by strips of rows) lives in :mod:`tasks.extract`, re-exported here.

Each stage takes and returns small things (plans, paths, frozen records), so a scheduler can
persist results cheaply; rasters live in files under the data root. The Prefect wrappers of
these stages are in ``flows.tasks``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from core.errors import RasterInputError
from tasks.coregister import align
from tasks.dem import read_dem_tiles
from tasks.extract import ExtractedLakes, extract_lakes  # re-exported: the flows' name for them
from tasks.grid import GridSpec
from tasks.pairing import ScenePlan
from tasks.preprocess import S2_BANDS, read_s2
from tasks.s1_read import read_s1_acquisition
from tasks.stack import StackInfo, stack_arrays, write_stack
from tasks.validity import dry_capable_before_water

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

    The S2 offset comes from the item's processing baseline, or, without one, from the offset
    detector (``StackInfo.s2_offset`` says which, with its evidence); the dry-capable sidecar is
    written only when the cloud state is known from SCL (:mod:`tasks.validity`).
    """
    s2_bands = {k: v for k, v in plan.s2.assets if k != "SCL"}
    scl = plan.s2.asset_map.get("SCL")
    s2 = read_s2(s2_bands, scl, plan.s2.processing_baseline, grid)
    s1_read = read_s1_acquisition(plan.s1, grid)  # RTC γ⁰ / GRD σ⁰ by what it is; logs the decision
    s1 = s1_read.backscatter
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
    info = write_stack(
        stack,
        valid,
        grid,
        out_dir,
        plan.scene_id,
        cloud_fraction=s2.cloud_fraction,
        dry_capable=dry_capable_before_water(valid, s2.snow_ice),
        s2_offset=s2.offset,
    )
    # Recorded with the scene: how S1 was read (tasks.sar) and how well S1/DEM sit on S2.
    return replace(info, quality=(*s1_read.radiometry.as_inputs().items(), *coreg.as_inputs().items()))


def _common_data(stack: NDArray[np.float32]) -> NDArray[np.bool_]:
    """Where every band of the stack has data, one band at a time (one H × W mask, not 15)."""
    common: NDArray[np.bool_] = np.isfinite(stack[0])
    for band in stack[1:]:
        common &= np.isfinite(band)
    return common
