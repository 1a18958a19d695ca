"""Synthetic mountain terrain for the demo scene: grid, DEM, glacier, sun and slope geometry.

Everything here is pure numpy on the *working grid*: the 10 m UTM scene grid (EPSG:32643) grown by a
margin on every side, so that 20 m / 60 m bands, the geographic DEM and cast shadows have terrain
beyond the scene edge. The layout is defined in scene fractions (``fx`` east, ``fy`` south, 0–1 over
the scene), so a smaller scene keeps the same valley, only narrower.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray
from pyproj import Transformer
from rasterio.transform import Affine
from scipy import ndimage

UTM_EPSG = 32643
"""UTM zone 43N: the scene CRS."""
RES_M = 10.0
"""Scene pixel size, metres."""
CENTRE_LON_LAT = (77.08, 43.05)
"""Scene centre: Northern Tien Shan, south of Almaty."""
BASE_ELEVATION_M = 3300.0
"""Valley-floor elevation at the northern scene edge, metres."""
SNAP_M = 60.0
"""Scene origin snapped to 60 m so the 10, 20 and 60 m Sentinel-2 grids share one corner."""
MIN_SIZE_PX = 256
"""Smallest scene that still holds the required lakes."""
GLACIER_TERMINUS_FY = 0.74
"""Scene fraction (south) where the glacier tongue ends."""
FLOOR_HALF_WIDTH = 0.22
"""Half width of the flat valley floor, scene fraction; the walls rise over the next 0.24."""


def rng_for(seed: int, tag: str) -> np.random.Generator:
    """A generator for one purpose: stable across calls and independent of call order."""
    return np.random.default_rng([seed, zlib.crc32(tag.encode())])


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> NDArray[np.float64]:
    """Spatially correlated Gaussian noise with unit standard deviation (correlation ~ sigma_px)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=max(sigma_px, 0.5), mode="wrap")
    return np.asarray((field - field.mean()) / (field.std() + 1e-12), dtype=np.float64)


@dataclass(frozen=True)
class SceneGrid:
    """The scene's 10 m UTM grid and the larger working grid around it.

    ``x0``/``y0`` are the scene's west and north edges in EPSG:32643 metres; the working grid adds
    ``margin_px`` pixels on every side.
    """

    size_px: int
    margin_px: int
    x0: float
    y0: float
    epsg: int = UTM_EPSG
    res: float = RES_M

    @property
    def work_size(self) -> int:
        """Working-grid width and height, pixels."""
        return self.size_px + 2 * self.margin_px

    @property
    def work_transform(self) -> Affine:
        """Affine of the working grid (10 m)."""
        m = self.margin_px * self.res
        return Affine(self.res, 0.0, self.x0 - m, 0.0, -self.res, self.y0 + m)

    def transform(self, res: float) -> Affine:
        """Affine of a scene-aligned grid at ``res`` metres (same north-west corner)."""
        return Affine(res, 0.0, self.x0, 0.0, -res, self.y0)

    def shape(self, res: float) -> tuple[int, int]:
        """Rows and columns covering the scene at ``res`` metres (rounded up)."""
        n = math.ceil(self.size_px * self.res / res)
        return n, n

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Scene bounds (west, south, east, north), EPSG:32643 metres."""
        ext = self.size_px * self.res
        return self.x0, self.y0 - ext, self.x0 + ext, self.y0

    def fractions(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per-pixel scene fractions (fx east, fy south) of the working grid's pixel centres."""
        idx = (np.arange(self.work_size) - self.margin_px + 0.5) / self.size_px
        return np.meshgrid(idx, idx)

    def xy(self, fx: float, fy: float) -> tuple[float, float]:
        """UTM coordinates of a point given in scene fractions."""
        ext = self.size_px * self.res
        return self.x0 + fx * ext, self.y0 - fy * ext


def make_grid(size_px: int) -> SceneGrid:
    """The scene grid centred on :data:`CENTRE_LON_LAT`, origin snapped to 60 m."""
    if size_px < MIN_SIZE_PX:
        raise ValueError(f"size_px must be >= {MIN_SIZE_PX}, got {size_px}")
    to_utm = Transformer.from_crs(4326, UTM_EPSG, always_xy=True)
    cx, cy = to_utm.transform(*CENTRE_LON_LAT)
    half = size_px * RES_M / 2
    x0 = math.floor((cx - half) / SNAP_M) * SNAP_M
    y0 = math.ceil((cy + half) / SNAP_M) * SNAP_M
    # The margin covers the 60 m overhang, the DEM's margin and the UTM grid convergence (~1.4 degrees
    # here), which grows the geographic DEM's extent in proportion to the scene size.
    return SceneGrid(size_px=size_px, margin_px=40 + size_px // 10, x0=x0, y0=y0)


def relief_m(size_px: int) -> float:
    """Valley-floor-to-crest relief, metres: 1300 m at 512 px, less on smaller scenes to keep slopes sane."""
    return 1300.0 * min(1.0, float((size_px / 512) ** 0.7))


def valley_centre(fy: NDArray[np.float64] | float) -> NDArray[np.float64] | float:
    """Valley axis (scene fraction east) as a function of the fraction south: a gentle meander."""
    return 0.5 + 0.05 * np.sin(2 * np.pi * (0.9 * np.asarray(fy) + 0.1))


def smoothstep(t: NDArray[np.float64]) -> NDArray[np.float64]:
    """Hermite ramp 0→1 over t in [0, 1] (clipped outside): soft edges for masks."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


@dataclass(frozen=True, eq=False)
class Terrain:
    """Static terrain on the working grid (10 m, EPSG:32643)."""

    elevation: NDArray[np.float64]
    """Metres, before the lakes are cut in (see ``lakes.carve_lakes``)."""
    glacier: NDArray[np.bool_]
    """Glacier (ice and firn) mask."""
    floor: NDArray[np.bool_]
    """Valley floor (moraine) as opposed to rock walls."""
    rel_height: NDArray[np.float64]
    """(elevation - base) / relief: 0 on the floor's north end, ~1 on crests."""
    relief: float


def build_terrain(grid: SceneGrid, seed: int) -> Terrain:
    """A north-draining glacial valley: floor ~3300 m, crests ~4600 m, a glacier tongue in the south."""
    rng = rng_for(seed, "terrain")
    n = grid.work_size
    shape = (n, n)
    fx, fy = grid.fractions()
    relief = relief_m(grid.size_px)
    s = grid.size_px
    d = np.abs(fx - valley_centre(fy))

    floor_z = (
        0.28 * relief * np.clip(fy, -0.1, 1.1)
        + 0.05 * relief * (np.minimum(d, FLOOR_HALF_WIDTH) / FLOOR_HALF_WIDTH) ** 2
    )
    wall_t = smoothstep((d - FLOOR_HALF_WIDTH) / 0.24)
    crest_var = 1.0 + 0.08 * smooth_noise(rng, shape, 0.08 * s)
    wall_z = 0.72 * relief * wall_t * crest_var
    head_z = 0.45 * relief * smoothstep((fy - 0.86) / 0.2)
    # Rougher on the walls (spurs, gullies) than on the hummocky moraine floor; amplitudes scale with
    # the scene like the noise wavelengths do, so slopes stay alike at every size.
    k = s / 512
    rough = k * (
        40.0 * smooth_noise(rng, shape, 0.03 * s)
        + 15.0 * smooth_noise(rng, shape, 0.012 * s)
        + 4.0 * smooth_noise(rng, shape, 0.004 * s)
    )
    hummocks = 5.0 * k * smooth_noise(rng, shape, 0.01 * s) + 1.5 * smooth_noise(rng, shape, 3.0)
    ridge = np.maximum(wall_z, head_z)
    z = BASE_ELEVATION_M + floor_z + ridge + (0.15 + 0.85 * wall_t) * rough + (1 - wall_t) * hummocks

    # Glacier tongue: widens south of the terminus, rounded snout, convex surface.
    width = 0.13 * np.sqrt(smoothstep((fy - GLACIER_TERMINUS_FY) / 0.12))
    edge_noise = 0.012 * smooth_noise(rng, shape, 0.02 * s)
    glacier = (fy > GLACIER_TERMINUS_FY) & (d < width + edge_noise * (width > 0))
    bulge = np.where(glacier, np.sqrt(np.clip(1 - (d / np.maximum(width, 1e-6)) ** 2, 0, 1)), 0.0)
    z = z + 30.0 * ndimage.gaussian_filter(bulge, 2.0)
    glacier = ndimage.binary_opening(glacier, iterations=2)

    floor = (d < FLOOR_HALF_WIDTH + 0.01 + 0.02 * smooth_noise(rng, shape, 0.03 * s)) & ~glacier
    rel = (z - BASE_ELEVATION_M) / relief
    return Terrain(elevation=z, glacier=glacier, floor=floor, rel_height=rel, relief=relief)


def slope_aspect(z: NDArray[np.float64], res: float = RES_M) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Slope (radians) and aspect (radians clockwise from north, the downslope direction)."""
    dz_drow, dz_dcol = np.gradient(z, res)
    gx, gn = dz_dcol, -dz_drow  # east and north components of the gradient
    slope = np.arctan(np.hypot(gx, gn))
    aspect = np.mod(np.arctan2(-gx, -gn), 2 * np.pi)
    return slope, aspect


def sun_position(when: datetime, lon: float, lat: float) -> tuple[float, float]:
    """Solar azimuth (degrees clockwise from north) and elevation (degrees) at a UTC time.

    NOAA's low-precision formulas: well within a degree, enough for shading a synthetic scene.
    """
    doy = when.timetuple().tm_yday
    hour = when.hour + when.minute / 60 + when.second / 3600
    g = 2 * math.pi / 365 * (doy - 1 + (hour - 12) / 24)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(g)
        - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g)
        - 0.040849 * math.sin(2 * g)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(g)
        + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g)
        + 0.00148 * math.sin(3 * g)
    )
    true_solar_min = hour * 60 + eqtime + 4 * lon
    ha = math.radians(true_solar_min / 4 - 180)
    phi = math.radians(lat)
    cos_zen = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    zen = math.acos(max(-1.0, min(1.0, cos_zen)))
    az = math.degrees(math.atan2(math.sin(ha), math.cos(ha) * math.sin(phi) - math.tan(decl) * math.cos(phi))) + 180
    return az % 360, 90 - math.degrees(zen)


def illumination(
    slope: NDArray[np.float64], aspect: NDArray[np.float64], sun_az: float, sun_el: float
) -> NDArray[np.float64]:
    """Cosine of the local solar incidence angle (<= 0: the slope faces away from the sun)."""
    zen, az = math.radians(90 - sun_el), math.radians(sun_az)
    return np.asarray(np.cos(zen) * np.cos(slope) + np.sin(zen) * np.sin(slope) * np.cos(az - aspect), dtype=np.float64)


def cast_shadow(
    z: NDArray[np.float64], sun_az: float, sun_el: float, res: float = RES_M, relief: float = 1500.0
) -> NDArray[np.bool_]:
    """Pixels hidden from the sun by terrain towards it (horizon march in 2 px steps)."""
    n_rows, n_cols = z.shape
    step_e, step_n = math.sin(math.radians(sun_az)), math.cos(math.radians(sun_az))
    tan_el = math.tan(math.radians(sun_el))
    max_steps = int(relief / tan_el / res / 2) + 1
    shadow = np.zeros(z.shape, dtype=bool)
    for k in range(1, max_steps + 1):
        dc, dr = round(2 * k * step_e), round(-2 * k * step_n)
        if abs(dc) >= n_cols or abs(dr) >= n_rows:
            break
        dist = math.hypot(dc, dr) * res
        src = z[max(dr, 0) : n_rows + min(dr, 0), max(dc, 0) : n_cols + min(dc, 0)]
        dst = (slice(max(-dr, 0), n_rows + min(-dr, 0)), slice(max(-dc, 0), n_cols + min(-dc, 0)))
        shadow[dst] |= src > z[dst] + dist * tan_el
    return shadow
