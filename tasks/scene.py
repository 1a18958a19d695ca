"""One scene's raster stages as Prefect tasks: prepare the stack, extract attributed lakes.

Each task takes and returns small things (plans, paths, frozen records) so results stay cheap
to persist; rasters live in files under the data root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from prefect import task
from prefect.cache_policies import NO_CACHE
from shapely.geometry import MultiPolygon

from db.records import ObservedLake
from tasks.attribute import attribute_lakes, valid_footprint
from tasks.coregister import StackInfo, read_stack, stack_arrays, write_stack
from tasks.grid import GridSpec
from tasks.pairing import ScenePlan
from tasks.preprocess import read_dem, read_s1, read_s2
from tasks.vectorize import mask_to_polygons, probability_to_mask


def prepare_stack(plan: ScenePlan, grid: GridSpec, out_dir: Path) -> StackInfo:
    """Read, harmonise and co-register S2 + S1 + DEM onto ``grid``; write the 15-band stack."""
    s2_bands = {k: v for k, v in plan.s2.assets if k != "SCL"}
    scl = plan.s2.asset_map.get("SCL")
    s2 = read_s2(s2_bands, scl, plan.s2.processing_baseline or "00.00", grid)
    s1 = read_s1(plan.s1.asset("vv"), plan.s1.asset("vh"), grid, linear=True)
    dem = read_dem(plan.dem.asset("data"), grid)
    stack, valid = stack_arrays(s2, s1, dem)
    return write_stack(stack, valid, grid, out_dir, plan.scene_id, cloud_fraction=s2.cloud_fraction)


@dataclass(frozen=True)
class ExtractedLakes:
    """Lakes of one scene plus where the scene could see."""

    lakes: tuple[ObservedLake, ...]
    footprint: MultiPolygon | None
    """Valid footprint, EPSG:4326."""


def extract_lakes(
    stack_info: StackInfo, probability_path: Path, threshold: float, min_area_m2: float
) -> ExtractedLakes:
    """Threshold → polygons (UTM) → attributes (EPSG:4326 geometry, metric areas)."""
    stack, valid, grid = read_stack(stack_info)
    with rasterio.open(probability_path) as src:
        prob = src.read(1).astype(np.float32)
    mask = probability_to_mask(prob, threshold) & valid
    polygons = mask_to_polygons(mask, grid, min_area_m2=min_area_m2, valid=valid)
    dem = stack[-1]
    lakes = attribute_lakes(polygons, prob, dem, grid)
    return ExtractedLakes(lakes=tuple(lakes), footprint=valid_footprint(valid, grid))


@task(name="prepare-stack", cache_policy=NO_CACHE)
def prepare_stack_task(plan: ScenePlan, grid: GridSpec, out_dir: Path) -> StackInfo:
    """Prefect wrapper of ``prepare_stack``.

    Not retried: inputs are local files, where a read error is permanent (corrupt or truncated).
    """
    return prepare_stack(plan, grid, out_dir)


@task(name="extract-lakes", cache_policy=NO_CACHE)
def extract_lakes_task(
    stack_info: StackInfo, probability_path: Path, threshold: float, min_area_m2: float
) -> ExtractedLakes:
    """Prefect wrapper of ``extract_lakes``."""
    return extract_lakes(stack_info, probability_path, threshold, min_area_m2)
