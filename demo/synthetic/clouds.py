"""Clouds, cloud shadows and cirrus for the demo dates (10 m working grid, EPSG:32643).

The cloud plan is fixed by date index: date 2 (index 1) has a thick cumulus fully covering the
``clouded`` lake, date 4 scattered cumulus, date 5 a thin cirrus band and a few small clouds; the
other dates are clear. Apart from that one planned cover, clouds, their shadows and cirrus stay
clear of every lake, so the truth's ``visible`` flag is false only there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from demo.synthetic.lakes import Lake, distance_m, lake_mask
from demo.synthetic.terrain import SceneGrid, rng_for, smooth_noise, smoothstep

# fmt: off
#                         B01   B02   B03   B04   B05   B06   B07   B08   B8A   B09   B11   B12
CLOUD_SPECTRUM = np.array([0.62, 0.60, 0.60, 0.61, 0.62, 0.63, 0.63, 0.64, 0.63, 0.50, 0.42, 0.32])
"""Thick water cloud: bright in every band, SWIR included (unlike snow)."""
CIRRUS_SPECTRUM = np.array([0.06, 0.055, 0.05, 0.045, 0.04, 0.04, 0.04, 0.04, 0.04, 0.03, 0.03, 0.02])
"""Added reflectance of a unit-thickness cirrus veil."""
# fmt: on
CLOUD_HEIGHT_M = 1500.0
"""Cloud height above the terrain, metres: sets the cloud-shadow offset."""
COVERED_LAKE = "clouded"
COVER_DATE_INDEX = 1
COVER_MARGIN_M = 260.0
"""Thick cloud extends at least about this far beyond the covered lake's outline."""


@dataclass(frozen=True, eq=False)
class CloudField:
    """Per-pixel cloud opacity, cloud-shadow strength and cirrus thickness, each 0–1."""

    opacity: NDArray[np.float64]
    shadow: NDArray[np.float64]
    cirrus: NDArray[np.float64]
    texture: NDArray[np.float64]

    def apply(self, refl: NDArray[np.float64], scl: NDArray[np.uint8]) -> tuple[NDArray[np.float64], NDArray[np.uint8]]:
        """Composite onto surface reflectance (12, rows, cols) and set SCL 3, 8, 9, 10."""
        refl = refl * (1 - 0.75 * self.shadow)
        refl = refl + self.cirrus * CIRRUS_SPECTRUM[:, None, None]
        cloud = CLOUD_SPECTRUM[:, None, None] * (1 + 0.08 * self.texture)
        refl = (1 - self.opacity) * refl + self.opacity * cloud
        scl = scl.copy()
        scl[(self.shadow > 0.3) & (self.opacity < 0.35)] = 3
        scl[(self.cirrus > 0.4) & (self.opacity < 0.35)] = 10
        scl[self.opacity >= 0.35] = 8
        scl[self.opacity >= 0.75] = 9
        return refl, scl


def _keep_out(grid: SceneGrid, lakes: tuple[Lake, ...], inner_m: float = 250.0) -> NDArray[np.float64]:
    """0 within ``inner_m`` of any of ``lakes``, rising to 1 by 150 m further out."""
    union = np.zeros((grid.work_size,) * 2, dtype=bool)
    for lake in lakes:
        union |= lake_mask(grid, lake.max_extent)
    return smoothstep((distance_m(union) - inner_m) / 150.0)


def make_clouds(
    grid: SceneGrid, lakes: tuple[Lake, ...], index: int, sun_az: float, sun_el: float, seed: int
) -> CloudField:
    """The cloud field of date ``index`` (see the module docstring for the plan)."""
    rng = rng_for(seed, f"clouds:{index}")
    n = grid.work_size
    shape = (n, n)
    s = grid.size_px
    zero = np.zeros(shape)
    texture = smooth_noise(rng, shape, 4.0)
    keep_all = _keep_out(grid, lakes)
    opacity, cirrus = zero.copy(), zero.copy()
    shadow_keep = keep_all

    if index == COVER_DATE_INDEX:
        target = next(lake for lake in lakes if lake.name == COVERED_LAKE)
        others = tuple(lake for lake in lakes if lake.name != COVERED_LAKE)
        ext = target.max_extent
        cx, cy = ext.centroid.x, ext.centroid.y
        r_lake = max(math.hypot(x - cx, y - cy) for x, y in ext.exterior.coords)
        t = grid.work_transform
        cols, rows = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
        dist = np.hypot(t.c + cols * t.a - cx, t.f + rows * t.e - cy)
        radius = (r_lake + COVER_MARGIN_M) * (1 + 0.12 * np.clip(smooth_noise(rng, shape, 0.05 * s), -1, 1))
        opacity = smoothstep((radius + 180.0 - dist) / 180.0) * np.maximum(_keep_out(grid, others), dist < radius)
        shadow_keep = _keep_out(grid, others)
    elif index == 3:
        field = smooth_noise(rng, shape, 0.035 * s)
        opacity = smoothstep((field - 0.9) / 0.6) * keep_all
    elif index == 4:
        fx, fy = grid.fractions()
        band = smoothstep(1 - np.abs(0.8 * fx + fy - 0.55) / 0.12)
        cirrus = 0.8 * band * (0.75 + 0.25 * np.clip(smooth_noise(rng, shape, 0.05 * s), -1, 1)) * keep_all
        field = smooth_noise(rng, shape, 0.02 * s)
        opacity = smoothstep((field - 2.0) / 0.5) * keep_all

    if opacity.any():
        reach = CLOUD_HEIGHT_M / math.tan(math.radians(sun_el)) / grid.res
        d_row = math.cos(math.radians(sun_az)) * reach  # shadows fall away from the sun
        d_col = -math.sin(math.radians(sun_az)) * reach
        cast = ndimage.shift(opacity, (d_row, d_col), order=1, mode="constant", cval=0.0)
        shadow = cast * (1 - opacity) * shadow_keep
    else:
        shadow = zero
    return CloudField(opacity=opacity, shadow=shadow, cirrus=cirrus, texture=texture)
