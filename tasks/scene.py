"""One scene's raster stages: prepare the analysis-ready stack, extract attributed lakes.

Each stage takes and returns small things (plans, paths, frozen records), so a scheduler can
persist results cheaply; rasters live in files under the data root. The Prefect wrappers of
these stages are in ``flows.tasks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from shapely.geometry import MultiPolygon

from db.records import ObservedLake
from tasks.attribute import attribute_lakes, valid_footprint

# The stack's preparation streams by strips in its own module; importable from here as before.
from tasks.prepare import prepare_stack
from tasks.stack import StackInfo, StackReader
from tasks.validity import dry_capable
from tasks.vectorize import mask_to_polygons, probability_to_mask

__all__ = ["ExtractedLakes", "extract_lakes", "prepare_stack"]


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
