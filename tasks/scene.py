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
from tasks.validity import dry_capable, dry_capable_before_water
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
    stack_info: StackInfo, probability_path: Path, threshold: float, min_area_m2: float
) -> ExtractedLakes:
    """Threshold → polygons (UTM) → attributes (see ``tasks.attribute``), plus the dry-capable footprint.

    Lakes are mapped on the valid data; the footprint is the dry-capable mask of
    :func:`tasks.validity.dry_capable`: valid, cloud state known, not snow/ice, and no water pixel
    (of any size, sub-mapping-unit ones included) within one pixel.

    Reads only what it uses: the probability (float32 0–1, NaN nodata), the valid and dry-capable
    masks and the stack's DEM band (metres), so memory is a few single-band rasters, not the
    15-band stack.
    """
    with StackReader(stack_info) as stack:
        valid = stack.read_valid()
        before_water = stack.read_dry_capable()
        dem = stack.read_band("DEM")
    grid = stack_info.grid
    with rasterio.open(probability_path) as src:
        prob = src.read(1).astype(np.float32)
    mask = probability_to_mask(prob, threshold) & valid
    polygons = mask_to_polygons(mask, grid, min_area_m2=min_area_m2, valid=valid)
    seen_dry = dry_capable(before_water, mask, prob)
    del mask, before_water  # the polygons carry the water from here; less at the attributes' peak
    footprint = valid_footprint(seen_dry, grid) if seen_dry is not None else None
    lakes = attribute_lakes(polygons, prob, dem, grid)
    return ExtractedLakes(lakes=tuple(lakes), footprint=footprint)
