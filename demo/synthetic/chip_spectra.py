"""Surface reflectance and backscatter tables of the training chips' land covers and water types.

Reflectance is 0–1 per Sentinel-2 band in TerraMind order (B01…B09, B8A, B11, B12); backscatter is
σ⁰ in dB (VV, VH). The first six land covers reuse the demo scene's spectra (rock, moraine, silt,
meadow, ice, snow); the rest are lowland covers, wet snow, lake ice and dark wet soil.
"""

from __future__ import annotations

import numpy as np

from demo.synthetic.scene import SIGMA0_DB, SPECTRA

# Land covers. The first six reuse the demo scene's spectra (rock, moraine, silt, meadow, ice, snow).
ROCK, DEBRIS, SILT, MEADOW, ICE, SNOW, FOREST, CROP, SOIL, URBAN, DIRTY_ICE, WET_SNOW, LAKE_ICE, WET_SOIL = range(14)
# fmt: off
#                 B01    B02    B03    B04    B05    B06    B07    B08    B8A    B09    B11    B12
_EXTRA = np.array([
    [0.030, 0.030, 0.050, 0.030, 0.080, 0.200, 0.250, 0.280, 0.300, 0.300, 0.150, 0.070],  # forest
    [0.040, 0.040, 0.070, 0.050, 0.120, 0.300, 0.360, 0.400, 0.420, 0.400, 0.220, 0.110],  # crop
    [0.100, 0.110, 0.150, 0.200, 0.230, 0.250, 0.270, 0.280, 0.300, 0.300, 0.350, 0.280],  # bare soil
    [0.120, 0.120, 0.130, 0.140, 0.160, 0.170, 0.180, 0.190, 0.200, 0.200, 0.220, 0.200],  # urban
    [0.250, 0.260, 0.260, 0.250, 0.240, 0.220, 0.210, 0.200, 0.190, 0.160, 0.050, 0.040],  # dirty ice
    [0.600, 0.620, 0.600, 0.580, 0.540, 0.480, 0.440, 0.400, 0.360, 0.260, 0.025, 0.020],  # wet snow
    [0.350, 0.370, 0.360, 0.340, 0.300, 0.250, 0.230, 0.200, 0.180, 0.140, 0.030, 0.025],  # lake ice
    [0.045, 0.045, 0.055, 0.065, 0.085, 0.110, 0.120, 0.130, 0.140, 0.140, 0.140, 0.100],  # wet, dark soil
])
LAND_SPECTRA = np.vstack([SPECTRA[:6], _EXTRA])
"""Surface reflectance (0–1) per land cover and band."""
# Wet snow is the darkest land in SAR (liquid water absorbs): the classic false positive.
LAND_SAR_DB = np.vstack([SIGMA0_DB[:6], [[-8.0, -14.0], [-10.0, -16.5], [-12.0, -20.0], [-4.0, -10.0],
                                         [-12.0, -19.0], [-20.5, -27.5], [-16.0, -23.0],
                                         [-9.0, -16.0]]])
WATER_TYPES = ("clear", "dark", "milky", "muddy", "shallow")
WATER_SPECTRA = np.array([
    SPECTRA[6],                                                                     # clear
    [0.040, 0.030, 0.025, 0.015, 0.010, 0.006, 0.005, 0.004, 0.003, 0.002, 0.002, 0.001],  # dark, deep
    [0.100, 0.110, 0.130, 0.090, 0.060, 0.030, 0.025, 0.022, 0.018, 0.010, 0.008, 0.006],  # milky glacial
    [0.100, 0.090, 0.105, 0.110, 0.110, 0.075, 0.068, 0.062, 0.052, 0.030, 0.025, 0.015],  # muddy flood
    [0.050, 0.040, 0.060, 0.060, 0.070, 0.070, 0.070, 0.070, 0.060, 0.045, 0.040, 0.030],  # shallow, turbid
])
WATER_SAR_DB = np.array([-22.5, -29.5])
HAZE = np.array([0.060, 0.050, 0.035, 0.025, 0.020, 0.015, 0.012, 0.010, 0.010, 0.008, 0.003, 0.002])
"""Path radiance of unit haze (also makes L1C-like, uncorrected inputs)."""
SKY_TINT = np.array([1.8, 1.7, 1.4, 1.2, 1.1, 1.0, 0.95, 0.9, 0.9, 0.85, 0.7, 0.6])
"""Diffuse skylight relative to direct sun: shadows are bluish."""
# fmt: on
