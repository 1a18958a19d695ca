"""Surface cover, Sentinel-2 L2A reflectance + SCL, and Sentinel-1 sigma0 for one demo date.

All arrays live on the 10 m working grid (EPSG:32643) until :func:`to_native` cuts and aggregates
them to a band's native grid. Reflectance is surface reflectance (0–1, float32); sigma0 is linear
power (not dB). Spectra and backscatter levels are calibrated on the real chips in the project's
sample data (TerraMesh S2 L2A / S1 RTC, Sen1Floods11 water) and on typical glacier-scene values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from demo.synthetic.clouds import make_clouds
from demo.synthetic.lakes import Lake, distance_m, lake_mask
from demo.synthetic.terrain import (
    CENTRE_LON_LAT,
    SceneGrid,
    Terrain,
    cast_shadow,
    illumination,
    rng_for,
    slope_aspect,
    smooth_noise,
    sun_position,
    valley_centre,
)

BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
"""Sentinel-2 L2A reflectance bands in TerraMind order."""
# fmt: off
BAND_RES_M = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
    "B08": 10, "B8A": 20, "B09": 60, "B11": 20, "B12": 20, "SCL": 20,
}
# fmt: on
"""Native pixel size of each Sentinel-2 L2A asset, metres."""

ROCK, MORAINE, SILT, VEG, ICE, SNOW, WATER_CLEAR, WATER_TURBID = range(8)
# fmt: off
#                        B01    B02    B03    B04    B05    B06    B07    B08    B8A    B09    B11    B12
SPECTRA = np.array([
    [0.110, 0.100, 0.120, 0.140, 0.160, 0.170, 0.180, 0.190, 0.200, 0.190, 0.220, 0.180],  # rock
    [0.140, 0.140, 0.160, 0.180, 0.200, 0.210, 0.220, 0.230, 0.240, 0.230, 0.260, 0.210],  # moraine
    [0.170, 0.180, 0.210, 0.230, 0.240, 0.250, 0.250, 0.260, 0.260, 0.250, 0.240, 0.190],  # dry silt
    [0.060, 0.050, 0.080, 0.070, 0.120, 0.220, 0.260, 0.280, 0.290, 0.280, 0.200, 0.120],  # meadow
    [0.420, 0.440, 0.420, 0.380, 0.350, 0.300, 0.280, 0.260, 0.240, 0.200, 0.040, 0.030],  # ice
    [0.860, 0.880, 0.860, 0.840, 0.810, 0.770, 0.740, 0.710, 0.670, 0.550, 0.100, 0.080],  # snow
    [0.075, 0.068, 0.062, 0.040, 0.030, 0.016, 0.013, 0.011, 0.009, 0.006, 0.005, 0.004],  # clear water
    [0.085, 0.080, 0.088, 0.070, 0.050, 0.025, 0.019, 0.016, 0.013, 0.008, 0.007, 0.005],  # turbid water
], dtype=np.float64)
"""Surface reflectance (0–1) per surface type and band."""

# Mean sigma0 in dB (VV, VH) per surface type. Wet summer snow and ice are darker than rock but stay
# well above open water (the classic SAR confusion is left mild on purpose).
SIGMA0_DB = np.array([
    [-10.5, -17.5], [-11.5, -18.5], [-13.5, -21.0], [-12.0, -18.0],
    [-14.5, -22.0], [-16.0, -23.5], [-22.5, -29.5], [-22.0, -29.0],
])
# fmt: on
S1_LOOK_AZIMUTH_DEG = 78.0
"""Ascending, right-looking: the radar looks east-north-east."""
S1_INCIDENCE_DEG = 38.0

SCL_PRIORITY = (9, 8, 10, 3, 2, 6, 11, 4, 5, 7, 1, 0)
"""Tie-break when a 20 m SCL pixel's four 10 m classes are split evenly."""


@dataclass(frozen=True, eq=False)
class Landscape:
    """Everything static the dates share (working grid, 10 m, EPSG:32643)."""

    grid: SceneGrid
    terrain: Terrain
    elevation: NDArray[np.float64]
    """Metres, with the lake basins carved in."""
    slope: NDArray[np.float64]
    aspect: NDArray[np.float64]
    lakes: tuple[Lake, ...]
    lake_distance: NDArray[np.float64]
    """Metres to the nearest lake max extent: the keep-out for snow, shadows and clouds."""
    seed: int


def build_landscape(
    grid: SceneGrid, terrain: Terrain, elevation: NDArray[np.float64], lakes: tuple[Lake, ...], seed: int
) -> Landscape:
    """Bundle the static layers and derive slope, aspect and the lake keep-out distance."""
    slope, aspect = slope_aspect(elevation, grid.res)
    union = np.zeros((grid.work_size,) * 2, dtype=bool)
    for lake in lakes:
        union |= lake_mask(grid, lake.max_extent)
    return Landscape(grid, terrain, elevation, slope, aspect, lakes, distance_m(union), seed)


@dataclass(frozen=True, eq=False)
class DateScene:
    """One acquisition date rendered on the working grid."""

    reflectance: NDArray[np.float32]
    """(12, rows, cols) surface reflectance, 0–1, bands as :data:`BANDS`."""
    scl: NDArray[np.uint8]
    """Scene classification at 10 m (ESA SCL codes)."""
    surface: NDArray[np.uint8]
    """Surface type under any cloud (codes of :data:`SPECTRA`)."""
    water: dict[str, NDArray[np.bool_]]
    """Per lake name: its water pixels on this date (lakes without water are absent)."""
    sun_azimuth: float
    sun_elevation: float


def surface_cover(
    land: Landscape, index: int, n_dates: int
) -> tuple[NDArray[np.uint8], NDArray[np.float64], dict[str, NDArray[np.bool_]]]:
    """Surface type, meadow fraction and per-lake water masks on date ``index``.

    Snow retreats up-slope through the season; low avalanche-cone patches shrink. Snow never comes
    within 160 m of a lake's max extent, so the lakes stay separable from it.
    """
    g, t = land.grid, land.terrain
    rng = rng_for(land.seed, "cover")
    shape = t.elevation.shape
    s = g.size_px
    fx, fy = g.fractions()
    season = index / max(n_dates - 1, 1)

    surface = np.where(t.floor, MORAINE, ROCK).astype(np.uint8)
    veg_noise = smooth_noise(rng, shape, 0.02 * s)
    meadow = np.clip(0.35 + 0.25 * veg_noise, 0.0, 0.75) * (
        (t.rel_height < 0.14) & (land.slope < math.radians(25)) & t.floor
    )
    surface[meadow > 0.2] = VEG

    snow_noise = smooth_noise(rng, shape, 0.015 * s)
    snowline = 0.60 + 0.12 * season + 0.05 * snow_noise
    snow = (t.rel_height > snowline) & (land.slope < math.radians(55))
    for dx, py, radius in ((-0.27, 0.50, 170.0), (0.26, 0.15, 150.0), (0.25, 0.70, 130.0)):
        cx = valley_centre(py) + dx
        dist = np.hypot(fx - cx, fy - py) * s * g.res
        snow |= dist < radius * (1.0 - 0.35 * season) * (1.0 + 0.25 * snow_noise)
    surface[t.glacier] = ICE
    surface[snow & (land.lake_distance >= 160.0)] = SNOW

    water: dict[str, NDArray[np.bool_]] = {}
    for lake in land.lakes:
        outline = lake.outlines[index]
        if outline is None:
            if any(p is not None for p in lake.outlines[:index]):
                surface[lake_mask(g, lake.max_extent)] = SILT  # the drained bed
            continue
        mask = lake_mask(g, outline)
        surface[mask] = WATER_TURBID if lake.spec.turbidity >= 0.5 else WATER_CLEAR
        water[lake.name] = mask
    return surface, meadow, water


def render_date(land: Landscape, index: int, n_dates: int, when: datetime) -> DateScene:
    """Sentinel-2 L2A reflectance and SCL for one date (10 m working grid)."""
    g = land.grid
    rng = rng_for(land.seed, f"s2:{index}")
    shape = land.elevation.shape
    surface, meadow, water = surface_cover(land, index, n_dates)

    refl = SPECTRA[surface].transpose(2, 0, 1).copy()
    veg = surface == VEG
    refl[:, veg] = meadow[veg] * SPECTRA[VEG][:, None] + (1 - meadow[veg]) * SPECTRA[MORAINE][:, None]
    turb = np.zeros(shape)
    for lake in land.lakes:
        if lake.name in water:
            turb[water[lake.name]] = np.clip(lake.spec.turbidity + 0.05 * math.sin(index + len(lake.name)), 0, 1)
    is_water = (surface == WATER_CLEAR) | (surface == WATER_TURBID)
    refl[:, is_water] = (1 - turb[is_water]) * SPECTRA[WATER_CLEAR][:, None] + turb[is_water] * SPECTRA[WATER_TURBID][
        :, None
    ]

    # Texture (static across dates): strong on rock and moraine, faint on water, snow and ice.
    tex_rng = rng_for(land.seed, "texture")
    texture = smooth_noise(tex_rng, shape, 1.5) * 0.6 + smooth_noise(tex_rng, shape, 6.0) * 0.8
    amp = np.where(is_water, 0.02, np.where((surface == SNOW) | (surface == ICE), 0.025, 0.09))
    refl *= 1 + amp * texture
    refl *= 1 + 0.01 * rng.standard_normal(refl.shape)

    sun_az, sun_el = sun_position(when, *CENTRE_LON_LAT)
    cos_i = illumination(land.slope, land.aspect, sun_az, sun_el)
    cos_z = math.sin(math.radians(sun_el))
    # L2A keeps some topographic brightness; lakes are flat so they are untouched (factor 1).
    refl *= np.clip(0.6 + 0.4 * cos_i / cos_z, 0.35, 1.3)
    shade = ((cos_i < 0.08) | cast_shadow(land.elevation, sun_az, sun_el, g.res, land.terrain.relief)) & (
        land.lake_distance > 60.0
    )
    refl[:, shade] = 0.008 + 0.035 * refl[:, shade]

    scl = np.full(shape, 5, dtype=np.uint8)
    scl[veg & (meadow > 0.35)] = 4
    scl[is_water] = 6
    scl[(surface == SNOW) | (surface == ICE)] = 11
    scl[(rng.random(shape) < 0.003) & (scl == 5)] = 7
    scl[shade] = 2
    clouds = make_clouds(g, land.lakes, index, sun_az, sun_el, land.seed)
    refl, scl = clouds.apply(refl, scl)
    return DateScene(np.clip(refl, 0.0, 1.6).astype(np.float32), scl, surface, water, sun_az, sun_el)


def render_s1(
    land: Landscape, surface: NDArray[np.uint8], index: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Geocoded sigma0 VV and VH (linear power) at 20 m on the scene grid, with 4-look speckle.

    ``surface`` is the paired S2 date's surface cover, so the radar sees the same lake extents.
    """
    g = land.grid
    rng = rng_for(land.seed, f"s1:{index}")
    theta = math.radians(S1_INCIDENCE_DEG)
    towards_sensor = math.radians(S1_LOOK_AZIMUTH_DEG + 180)
    cos_loc = np.cos(theta) * np.cos(land.slope) + np.sin(theta) * np.sin(land.slope) * np.cos(
        land.aspect - towards_sensor
    )
    gain = np.clip(cos_loc / math.cos(theta), 0.15, 4.0)
    out = []
    for pol in range(2):
        db = SIGMA0_DB[surface, pol] + 0.8 * smooth_noise(rng, surface.shape, 8.0)
        lin = 10 ** (db / 10) * gain
        lin20 = to_native(lin[None], g, 20)[0]
        out.append((lin20 * rng.gamma(4.0, 0.25, lin20.shape)).astype(np.float32))
    return out[0], out[1]


def to_native(stack: NDArray[np.floating], grid: SceneGrid, res: int) -> NDArray[np.float64]:
    """Cut the scene out of the working grid and block-average it to ``res`` metres (10, 20 or 60)."""
    f = int(res // grid.res)
    n = grid.shape(res)[0]
    m = grid.margin_px
    cut = stack[:, m : m + n * f, m : m + n * f].astype(np.float64)
    return np.asarray(cut.reshape(cut.shape[0], n, f, n, f).mean(axis=(2, 4)), dtype=np.float64)


def scl_to_20m(scl: NDArray[np.uint8], grid: SceneGrid) -> NDArray[np.uint8]:
    """20 m SCL from the 10 m classes: the most frequent class, ties broken by :data:`SCL_PRIORITY`."""
    n = grid.shape(20)[0]
    m = grid.margin_px
    cut = scl[m : m + 2 * n, m : m + 2 * n].reshape(n, 2, n, 2).transpose(0, 2, 1, 3).reshape(n, n, 4)
    rank = np.zeros(16, dtype=np.int64)
    for r, code in enumerate(SCL_PRIORITY):
        rank[code] = len(SCL_PRIORITY) - r
    counts = (cut[..., None] == np.arange(16)).sum(axis=2)
    return np.asarray(np.argmax(counts * 32 + rank, axis=2).astype(np.uint8), dtype=np.uint8)
