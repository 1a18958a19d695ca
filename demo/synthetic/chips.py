"""Training chips for the water segmenter: synthetic stacks with deliberately hard randomisation.

A chip is one window of an analysis-ready stack: float32 ``(15, size, size)`` in
``models.segmenter.STACK_BANDS`` order (S2 L2A reflectance × 10 000 on the pre-04.00 scale, VV and
VH in dB, DEM in metres; NaN nodata) on a 10 m grid, a valid mask, and a label (1 water, 0 not
water, :data:`IGNORE` outside valid). Chips carry no CRS: they stand for a window of any UTM grid.
Band levels reuse the demo scene's spectra (calibrated on the TerraMesh and Sen1Floods11 chips)
plus lowland covers (wet dark soil among them), wet snow, lake ice and five water types; river
banks may be overhung by vegetation.

Label decisions:

* Water is open liquid water on the date; a mixed shore pixel is water when at least half of it is.
* **Ice or snow on a lake is not water** (label 0); in a partly frozen lake only the open water is.
  The model maps what the sensor sees on the date, like the spectral baseline; frozen lakes are
  handled by choosing ice-free scenes, not by guessing a shoreline under the ice.
* Thick cloud (and, in some chips, its shadow) is masked as invalid, like SCL 8/9/3. Thin cloud,
  cirrus and unmasked cloud shadow are distractors: they keep the label of the surface below.
* Terrain shadow never changes the label: shadowed water is water, shadowed snow is not.

Every chip is a pure function of ``(seed, split, index)``; the splits use disjoint random streams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from demo.synthetic.chip_spectra import (
    CROP,
    DEBRIS,
    DIRTY_ICE,
    FOREST,
    HAZE,
    ICE,
    LAKE_ICE,
    LAND_SAR_DB,
    LAND_SPECTRA,
    MEADOW,
    ROCK,
    SILT,
    SKY_TINT,
    SNOW,
    SOIL,
    URBAN,
    WATER_SAR_DB,
    WATER_SPECTRA,
    WATER_TYPES,
    WET_SNOW,
    WET_SOIL,
)
from demo.synthetic.clouds import CloudField
from demo.synthetic.terrain import cast_shadow, illumination, slope_aspect, smoothstep

__all__ = ["IGNORE", "SPLITS", "ChipParams", "ChipSet", "Scenario", "make_training_chips", "render_chip"]

IGNORE = 255
"""Label value outside the valid mask."""
SPLITS = {"train": 1, "val": 2, "test": 3}
"""Split name → independent random-stream key."""
RES_M = 10.0

_BANDS_20M = (4, 5, 6, 8, 10, 11)
_BANDS_60M = (0, 9)


@dataclass(frozen=True)
class Scenario:
    """Constraints on a chip; ``None`` leaves a draw random.

    Attributes:
        kind: ``alpine`` or ``lowland``.
        water: False gives a land-only chip (no lakes, rivers or floods).
        snow_cover: Share of land under snow (0–1).
        clouds: False gives a cloud-free chip.
    """

    kind: str | None = None
    water: bool = True
    snow_cover: float | None = None
    clouds: bool = True


@dataclass(frozen=True)
class ChipParams:
    """What was drawn for one chip (angles in degrees, gain as a factor, SAR in dB, DEM in m)."""

    kind: str
    sun_elevation_deg: float
    sun_azimuth_deg: float
    gain: float
    haze: float
    water_types: tuple[str, ...]
    lake_states: tuple[str, ...]
    """Per lake: ``open``, ``partly_frozen``, ``frozen`` or ``snow_covered``."""
    river_width_px: float
    flood: bool
    snow_cover: float
    wet_snow_share: float
    glacier: bool
    cloud_mode: str
    """``none``, ``masked`` (invalid), ``distractor`` (unmasked thin cloud, cirrus, shadow) or ``both``."""
    wind_db: float
    """Wind roughening added to water backscatter."""
    enl: float
    """Equivalent number of looks of the speckle."""
    dem_noise_m: float
    shadow_fraction: float
    water_fraction: float
    """Share of valid pixels labelled water."""


@dataclass(frozen=True, eq=False)
class ChipSet:
    """A batch of chips: ``stack`` (n, 15, H, W) float32, ``valid`` (n, H, W), ``label`` (n, H, W) uint8."""

    stack: NDArray[np.float32]
    valid: NDArray[np.bool_]
    label: NDArray[np.uint8]
    params: tuple[ChipParams, ...]


def _noise(rng: np.random.Generator, n: int, sigma: float) -> NDArray[np.float64]:
    """Unit-variance correlated noise ``(n, n)``; large correlation lengths drawn coarse and zoomed."""
    f = max(1, int(sigma // 3))
    m = n // f + 3
    field = ndimage.gaussian_filter(rng.standard_normal((m, m)), sigma / f, mode="wrap")
    if f > 1:
        field = ndimage.zoom(field, f, order=1)
    field = field[:n, :n]
    return np.asarray((field - field.mean()) / (field.std() + 1e-12), dtype=np.float64)


def _terrain(rng: np.random.Generator, n: int, kind: str) -> NDArray[np.float64]:
    """Elevation (m): an alpine valley of random width, relief and direction, or rolling lowland."""
    rows, cols = np.mgrid[0:n, 0:n] - n / 2.0
    if kind == "lowland":
        relief = rng.uniform(5, 120)
        tilt = rng.uniform(-0.02, 0.02, 2) * RES_M
        base = rng.uniform(0, 1500)
        rolling = 0.6 * _noise(rng, n, 0.3 * n) + 0.3 * _noise(rng, n, 0.08 * n)
        return np.asarray(base + relief * rolling + tilt[0] * rows + tilt[1] * cols, dtype=np.float64)
    relief = rng.uniform(150, 1400)
    a = rng.uniform(0, math.pi)
    d = np.abs(cols * math.cos(a) + rows * math.sin(a) - rng.uniform(-0.25, 0.25) * n)
    d = d + 0.06 * n * _noise(rng, n, 0.1 * n)  # a winding valley
    half, wall = rng.uniform(0.05, 0.35) * n, rng.uniform(0.15, 0.5) * n
    t = smoothstep((d - half) / wall)
    along = (-cols * math.sin(a) + rows * math.cos(a)) * rng.uniform(-0.08, 0.08) * RES_M
    rough = relief * (0.05 * _noise(rng, n, 0.05 * n) + 0.015 * _noise(rng, n, 0.012 * n))
    hummocks = 3.0 * _noise(rng, n, 4.0)
    z = relief * t * (1 + 0.15 * _noise(rng, n, 0.2 * n)) + (0.2 + 0.8 * t) * rough + (1 - t) * hummocks
    return np.asarray(rng.uniform(2500, 5200) + z + along, dtype=np.float64)


def _lakes(
    rng: np.random.Generator, z: NDArray[np.float64], count: int, lo: int, hi: int
) -> tuple[NDArray[np.float64], list[NDArray[np.bool_]]]:
    """Perturbed-ellipse lakes on gentle ground, basins carved flat. Returns cover fraction and zones."""
    n = z.shape[0]
    slope = np.degrees(slope_aspect(ndimage.gaussian_filter(z, 3), RES_M)[0])
    frac = np.zeros_like(z)
    zones: list[NDArray[np.bool_]] = []
    rr, cc = np.mgrid[0:n, 0:n]
    for _ in range(count):
        ok = np.argwhere(slope[lo:hi, lo:hi] < 8.0) + lo
        cy, cx = ok[rng.integers(len(ok))] if len(ok) else rng.integers(lo, hi, 2)
        a = float(np.exp(rng.uniform(np.log(4), np.log(60))))
        b = a / rng.uniform(1.0, 2.2)
        ang = rng.uniform(0, math.pi)
        u = (cc - cx) * math.cos(ang) + (rr - cy) * math.sin(ang)
        v = -(cc - cx) * math.sin(ang) + (rr - cy) * math.cos(ang)
        rho, theta = np.hypot(u / a, v / b), np.arctan2(v / b, u / a)
        r = np.ones_like(rho)
        for k in range(2, 7):
            r += rng.uniform(0.0, 0.12) / (k - 1) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
        f = np.clip(0.5 + (r - rho) * b, 0.0, 1.0)
        zone = ndimage.binary_dilation(f > 0, iterations=2)
        dist = ndimage.distance_transform_edt(~zone)
        level = float(z[zone].min())
        # A closed basin with no cliff at its shore: banks trimmed, a low rim, the surface flat.
        # (distances in px; the quadratic term keeps the trim off the valley walls)
        z[:] = np.maximum(np.minimum(z, level + 1.0 + 3.5 * dist + 0.4 * dist**2), level + 1.5 - 0.5 * dist)
        z[zone] = level
        frac = np.maximum(frac, f)
        zones.append(zone)
    return frac, zones


def _river(rng: np.random.Generator, z: NDArray[np.float64], width: float) -> NDArray[np.float64]:
    """A meandering channel that drifts downhill; cover fraction with sub-pixel edges."""
    n = z.shape[0]
    gy, gx = np.gradient(ndimage.gaussian_filter(z, 8))
    y, x = rng.uniform(0.3, 0.7, 2) * n
    line = np.zeros(z.shape, bool)
    start = rng.uniform(0, 2 * math.pi)
    for sign in (1.0, -1.0):  # grow both ways from a random interior point
        py, px, turn = y, x, 0.0
        course = head = start if sign > 0 else start + math.pi
        for _ in range(3 * n):
            iy, ix = int(py), int(px)
            if not (0 <= iy < n and 0 <= ix < n):
                break
            line[iy, ix] = True
            g = math.hypot(gy[iy, ix], gx[iy, ix])
            if g > 0.02:  # on a slope the course bends downhill (uphill going upstream)
                down = math.atan2(-sign * gy[iy, ix], -sign * gx[iy, ix])
                course += 0.05 * math.sin(down - course)
            turn = 0.93 * turn + rng.normal(0, 0.012) + 0.004 * math.sin(course - head)
            head += turn
            py, px = py + 0.7 * math.sin(head), px + 0.7 * math.cos(head)
    dist = ndimage.distance_transform_edt(~line)
    corridor = dist < width / 2 + 4
    z[corridor] = ndimage.gaussian_filter(z, 5)[corridor] - 2.0
    return np.asarray(np.clip(width / 2 + 0.5 - dist, 0.0, 1.0), dtype=np.float64)


def _cover_alpine(
    rng: np.random.Generator,
    z: NDArray[np.float64],
    slope_deg: NDArray[np.float64],
    snow_cover: float,
    wet_share: float,
    glacier: bool,
) -> NDArray[np.float64]:
    """Abundances ``(13, n, n)``: rock on steep ground, debris and meadow below, ice, snow, wet snow."""
    n = z.shape[0]
    cover = np.zeros((len(LAND_SPECTRA), n, n))
    rel = (z - z.min()) / max(np.ptp(z), 1.0)
    steep = smoothstep((slope_deg - 15.0) / 20.0)
    cover[ROCK], cover[DEBRIS] = steep, 1 - steep
    if rng.random() < 0.5:
        meadow = np.clip(0.5 + 0.4 * _noise(rng, n, 0.05 * n), 0, 1) * (rel < rng.uniform(0.1, 0.4)) * (1 - steep)
        cover[MEADOW] += meadow
        cover[DEBRIS] -= meadow
    if rng.random() < 0.3:  # silt flats and drained beds: bright, flat, dry
        silt = (_noise(rng, n, 0.04 * n) > 1.3) * (1 - steep)
        cover[SILT] += silt * cover[DEBRIS]
        cover[DEBRIS] *= 1 - silt
    if glacier:
        ice = ((rel + 0.15 * _noise(rng, n, 0.1 * n)) > rng.uniform(0.3, 0.8)) & (slope_deg < 35)
        dirt = np.clip(0.5 + 0.5 * _noise(rng, n, 0.05 * n), 0, 1)
        cover[:, ice] = 0
        cover[ICE, ice], cover[DIRTY_ICE, ice] = 1 - dirt[ice], dirt[ice] * 0.7
        cover[DEBRIS, ice] = dirt[ice] * 0.3
    if snow_cover > 0:
        score = rel + 0.25 * _noise(rng, n, 0.03 * n) - 0.2 * steep
        snow = score >= np.quantile(score, 1 - snow_cover)
        wet_field = _noise(rng, n, 0.06 * n) + 0.5 * (1 - rel)  # wet snow lower down, mostly
        wet = wet_field <= np.quantile(wet_field, wet_share) if wet_share > 0 else np.zeros_like(snow)
        keep = 1 - 0.9 * smoothstep((slope_deg[snow] - 45.0) / 15.0)  # rock shows through on cliffs
        cover[:, snow] *= 1 - keep
        cover[SNOW, snow] += keep * ~wet[snow]
        cover[WET_SNOW, snow] += keep * wet[snow]
    return cover


def _cover_lowland(rng: np.random.Generator, z: NDArray[np.float64], snow_cover: float) -> NDArray[np.float64]:
    """Abundances: field parcels (crop, soil, meadow) between forest and urban blocks."""
    n = z.shape[0]
    cover = np.zeros((len(LAND_SPECTRA), n, n))
    ph, pw = rng.integers(8, 40, 2)
    rr, cc = np.mgrid[0:n, 0:n]
    parcel = (rr // ph) * 1000 + (cc + (rr // ph) * rng.integers(0, 17)) // pw
    classes = rng.choice([CROP, SOIL, MEADOW, CROP, SILT, WET_SOIL], size=parcel.max() + 1)
    cls = classes[parcel]
    big = _noise(rng, n, 0.12 * n)
    cls = np.where(big > rng.uniform(0.0, 1.2), FOREST, cls)
    cls = np.where(_noise(rng, n, 0.06 * n) > rng.uniform(1.2, 2.5), URBAN, cls)
    np.put_along_axis(cover, cls[None], 1.0, axis=0)
    if snow_cover > 0:
        field = _noise(rng, n, 0.05 * n)
        snow = field <= np.quantile(field, snow_cover)
        cover[:, snow] = 0
        cover[rng.choice([SNOW, WET_SNOW]), snow] = 1
    return cover


def _clouds(
    rng: np.random.Generator, n: int, mode: str, sun_az: float, sun_el: float
) -> tuple[CloudField, NDArray[np.bool_]]:
    """Cloud field and the mask of what a cloud mask would flag (thick cloud, maybe its shadow)."""
    zero = np.zeros((n, n))
    opacity, cirrus, shadow, masked = zero.copy(), zero.copy(), zero.copy(), np.zeros((n, n), bool)
    if mode in ("masked", "both"):
        field = _noise(rng, n, rng.uniform(0.03, 0.12) * n)
        thick = smoothstep((field - rng.uniform(0.3, 2.0)) / 0.5)
        reach = rng.uniform(500, 3000) / math.tan(math.radians(sun_el)) / RES_M
        drow, dcol = math.cos(math.radians(sun_az)) * reach, -math.sin(math.radians(sun_az)) * reach
        cast = ndimage.shift(thick, (drow, dcol), order=1, mode="constant") * (1 - thick)
        opacity, shadow = thick, cast
        masked = thick >= 0.35
        if rng.random() < 0.6:
            masked |= cast > 0.3
    if mode in ("distractor", "both"):
        thin = smoothstep((_noise(rng, n, 0.05 * n) - 1.0) / 0.8) * rng.uniform(0.1, 0.3)
        opacity = np.maximum(opacity, thin * ~masked)
        cirrus = rng.uniform(0, 0.8) * smoothstep((_noise(rng, n, 0.1 * n) + 0.5) / 1.5)
        ghost = smoothstep((_noise(rng, n, 0.06 * n) - 1.2) / 0.4)  # shadow of a cloud off the chip
        shadow = np.maximum(shadow, ghost * rng.uniform(0.4, 1.0))
    return CloudField(opacity, shadow, cirrus, _noise(rng, n, 4.0)), masked


def render_chip(
    size: int = 224, seed: int = 0, split: str = "train", index: int = 0, scenario: Scenario = Scenario()
) -> tuple[NDArray[np.float32], NDArray[np.bool_], NDArray[np.uint8], ChipParams]:
    """One chip: stack ``(15, size, size)`` float32, valid, label (1/0/:data:`IGNORE`) and its draws."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    m = size // 4  # margin: shadows, rivers and blurs reach in from outside the chip
    n = size + 2 * m
    kind = scenario.kind or ("alpine" if rng.random() < 0.65 else "lowland")
    alpine = kind == "alpine"
    z = _terrain(rng, n, kind)

    water_types: list[str] = []
    states: list[str] = []
    frac, ice, snowy = np.zeros((n, n)), np.zeros((n, n)), np.zeros((n, n), bool)
    weights = np.zeros((len(WATER_TYPES), n, n))
    river_w, flood = 0.0, False
    overhang = np.zeros((n, n))
    if scenario.snow_cover is not None:
        snow_cover = scenario.snow_cover
    else:
        levels = [0.0, rng.uniform(0.02, 0.3), rng.uniform(0.3, 0.7), rng.uniform(0.9, 1.0)]
        snow_cover = float(rng.choice(levels, p=[0.3, 0.35, 0.2, 0.15] if alpine else [0.85, 0.1, 0.05, 0.0]))
    wet_share = float(rng.choice([0.0, rng.uniform(0.1, 1.0)], p=[0.35, 0.65]))

    def add_water(f: NDArray[np.float64]) -> None:
        # clear, dark, milky, muddy, shallow (turbid, bottom showing through)
        odds = [0.27, 0.18, 0.27, 0.18, 0.1] if alpine else [0.2, 0.1, 0.15, 0.35, 0.2]
        main, other = rng.choice(len(WATER_TYPES), 2, replace=False, p=odds)
        mix = rng.uniform(0, 0.5) * np.clip(0.5 + 0.5 * _noise(rng, n, 0.05 * n), 0, 1)
        new = f > frac
        weights[:, new] = 0
        weights[main, new], weights[other, new] = 1 - mix[new], mix[new]
        frac[:] = np.maximum(frac, f)
        water_types.append(WATER_TYPES[main])

    if scenario.water:
        count = int(rng.choice(5, p=[0.15, 0.3, 0.25, 0.15, 0.15]))
        lakes, zones = _lakes(rng, z, count, m, n - m)
        for zone in zones:
            add_water(np.where(zone, lakes, 0.0))
            odds = [0.72, 0.12, 0.08, 0.08] if alpine else [1, 0, 0, 0]
            state = str(rng.choice(["open", "partly_frozen", "frozen", "snow_covered"], p=odds))
            if snow_cover > 0.85 and alpine:
                state = "snow_covered"
            states.append(state)
            if state != "open":
                ice_cover: float | NDArray[np.float64] = 1.0
                if state == "partly_frozen":  # ice floes and shore ice; open leads between
                    ice_cover = smoothstep((_noise(rng, n, 6.0) - rng.uniform(-0.8, 0.8)) / 0.3)
                ice[zone] = np.maximum(ice[zone], (ice_cover * np.ones((n, n)))[zone])
                snowy[zone] |= state == "snow_covered"
        if rng.random() < (0.35 if alpine else 0.75):
            river_w = float(rng.uniform(1.0, 5.0) if alpine else rng.uniform(1.5, 14.0))
            river = _river(rng, z, river_w)
            add_water(river)
            if rng.random() < 0.6:  # trees and grass overhanging the banks: water stays water below half
                overhang = river * rng.uniform(0.1, 0.4) * np.clip(0.5 + 0.5 * _noise(rng, n, 3.0), 0, 1)
        if not alpine and rng.random() < 0.3:
            flood = True
            lowness = -(z - z.mean()) / max(z.std(), 1.0)
            field = _noise(rng, n, 0.08 * n) + 0.7 * lowness
            add_water(np.clip((field - rng.uniform(0.5, 1.5)) * 4, 0, 1))

    slope, aspect = slope_aspect(z, RES_M)
    slope_deg = np.degrees(slope)
    glacier = alpine and rng.random() < 0.5
    if alpine:
        cover = _cover_alpine(rng, z, slope_deg, snow_cover, wet_share, glacier)
    else:
        cover = _cover_lowland(rng, z, snow_cover)
    open_water = frac * (1 - ice)
    cover *= 1 - frac
    cover[LAKE_ICE] += frac * ice * ~snowy
    cover[SNOW] += frac * ice * snowy

    # --- Sentinel-2: per-chip spectra, texture, sun, shadow, haze, gain, clouds, resolution.
    land_spec = LAND_SPECTRA * rng.uniform(0.85, 1.15, (len(LAND_SPECTRA), 1))
    land_spec = land_spec * np.exp(rng.normal(0, 0.07, LAND_SPECTRA.shape))
    water_spec = WATER_SPECTRA * np.exp(rng.normal(0, 0.12, WATER_SPECTRA.shape)) * rng.uniform(0.8, 1.25)
    texture = 0.6 * _noise(rng, n, 1.5) + 0.8 * _noise(rng, n, 6.0)
    land = np.einsum("cb,chw->bhw", land_spec, cover) * (1 + rng.uniform(0.03, 0.12) * texture)
    water = np.einsum("tb,thw->bhw", water_spec, weights) * (1 + 0.02 * texture)
    glint = rng.uniform(0, 0.05) if rng.random() < 0.1 else 0.0
    bank = land_spec[FOREST if rng.random() < 0.5 else MEADOW][:, None, None]
    refl = land + open_water * ((1 - overhang) * (water + glint) + overhang * bank)

    sun_el, sun_az = float(rng.uniform(15, 70)), float(rng.uniform(0, 360))
    cos_i = illumination(slope, aspect, sun_az, sun_el)
    k = rng.uniform(0.2, 0.5)  # L2A removes only part of the topographic brightness
    refl *= np.clip(1 - k + k * cos_i / math.sin(math.radians(sun_el)), 0.3, 1.5)
    shade = (cos_i < 0.03) | cast_shadow(z, sun_az, sun_el, RES_M, float(np.ptp(z)) + 1.0)
    diffuse = rng.uniform(0.06, 0.3)
    refl[:, shade] = refl[:, shade] * diffuse * SKY_TINT[:, None] + 0.004

    haze = float(rng.uniform(0, 1)) if rng.random() < 0.4 else 0.0
    refl += haze * HAZE[:, None, None]
    gain = float(rng.uniform(0.7, 1.3))
    refl *= gain * np.exp(rng.normal(0, 0.03, 12))[:, None, None]
    cloud_mode = "none"
    if scenario.clouds:
        cloud_mode = str(rng.choice(["none", "masked", "distractor", "both"], p=[0.45, 0.25, 0.15, 0.15]))
    clouds, cloud_masked = _clouds(rng, n, cloud_mode, sun_az, sun_el)
    refl, _ = clouds.apply(refl, np.zeros((n, n), np.uint8))
    for b in _BANDS_20M:
        refl[b] = ndimage.gaussian_filter(ndimage.uniform_filter(refl[b], 2), 0.5)
    for b in _BANDS_60M:
        refl[b] = ndimage.uniform_filter(refl[b], 6)
    refl += rng.normal(0, 0.002, refl.shape) + refl * rng.normal(0, 0.01, refl.shape)

    # --- Sentinel-1: per-cover backscatter, wind on water, terrain geometry, speckle.
    land_db = LAND_SAR_DB + rng.normal(0, 1.2, LAND_SAR_DB.shape) + rng.normal(0, 1.5)
    wind = float(rng.uniform(2, 10)) if rng.random() < 0.3 else 0.0
    theta = math.radians(rng.uniform(30, 45))
    towards = math.radians((78.0 if rng.random() < 0.5 else 282.0) + 180.0)
    cos_loc = np.cos(theta) * np.cos(slope) + np.sin(theta) * np.sin(slope) * np.cos(aspect - towards)
    geom = np.clip(cos_loc / math.cos(theta), 0.03, 5.0)
    enl = float(rng.uniform(3, 20))
    wind_field = wind * np.clip(0.6 + 0.4 * _noise(rng, n, 0.1 * n), 0, 1)
    sar = []
    for p in range(2):
        lin = np.einsum("c,chw->hw", 10 ** (land_db[:, p] / 10), cover) * geom
        lin += open_water * 10 ** ((WATER_SAR_DB[p] + rng.normal(0, 1.0) + wind_field) / 10)
        lin = ndimage.gaussian_filter(lin, 0.7) * rng.gamma(enl, 1 / enl, lin.shape)
        sar.append(np.clip(10 * np.log10(np.maximum(lin, 1e-5)), -40, 15))

    # --- DEM: 30 m smoothing, correlated noise, bias; lakes flattened half of the time (COP DEM).
    dem_noise = float(rng.uniform(0.3, 4.0))
    dem = ndimage.gaussian_filter(z, rng.uniform(0.8, 1.8)) + dem_noise * _noise(rng, n, 1.5) + rng.uniform(-10, 10)
    if rng.random() < 0.5:
        smooth = ndimage.gaussian_filter(z, 1.0)
        dem = np.where(frac > 0.5, smooth, dem)

    stack = np.concatenate([np.clip(refl * 10_000, 0, None), np.stack(sar), dem[None]]).astype(np.float32)
    stack = stack[:, m : m + size, m : m + size]
    valid = ~cloud_masked[m : m + size, m : m + size]
    if rng.random() < 0.08:  # S2 swath edge, S1 strip or DEM void: NaN nodata
        rows, cols = np.mgrid[0:size, 0:size]
        a = rng.uniform(0, 2 * math.pi)
        reach = rng.uniform(0.5, 1.0) * size * (abs(math.sin(a)) + abs(math.cos(a)))
        edge = rows * math.sin(a) + cols * math.cos(a) > reach
        stack[[slice(0, 12), slice(12, 14), slice(14, 15)][rng.integers(3)], edge] = np.nan
    valid &= np.isfinite(stack).all(axis=0)
    water_px = open_water[m : m + size, m : m + size] >= 0.5
    label = np.where(valid, water_px, IGNORE).astype(np.uint8)
    params = ChipParams(
        kind,
        sun_el,
        sun_az,
        gain,
        haze,
        tuple(water_types),
        tuple(states),
        river_w,
        flood,
        snow_cover,
        wet_share,
        glacier,
        cloud_mode,
        wind,
        enl,
        dem_noise,
        float(shade[m : m + size, m : m + size].mean()),
        float(water_px[valid].mean()) if valid.any() else 0.0,
    )
    return stack, valid, label, params


def make_training_chips(
    n: int, size: int = 224, seed: int = 0, split: str = "train", scenario: Scenario = Scenario()
) -> ChipSet:
    """``n`` chips of ``split`` (``train``, ``val`` or ``test``: disjoint random streams).

    Args:
        n: Number of chips.
        size: Chip width and height, pixels (10 m).
        seed: Recipe seed; the same ``(seed, split)`` always gives the same chips.
        split: Which stream.
        scenario: Constraints (land-only, snow-covered, …).

    Returns:
        The stacked chips (see :class:`ChipSet`).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if size < 32:
        raise ValueError(f"size must be >= 32 px, got {size}")
    chips = [render_chip(size, seed, split, i, scenario) for i in range(n)]
    return ChipSet(
        np.stack([c[0] for c in chips]) if chips else np.zeros((0, 15, size, size), np.float32),
        np.stack([c[1] for c in chips]) if chips else np.zeros((0, size, size), bool),
        np.stack([c[2] for c in chips]) if chips else np.zeros((0, size, size), np.uint8),
        tuple(c[3] for c in chips),
    )
