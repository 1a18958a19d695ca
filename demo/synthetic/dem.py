"""The demo DEM in the Copernicus GLO-30 layout: EPSG:4326, 1 arc-second, pixel centres on whole seconds."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from pyproj import Transformer
from rasterio.transform import Affine
from scipy import ndimage

from demo.synthetic.terrain import UTM_EPSG, SceneGrid

ARC_SECOND = 1.0 / 3600.0
MARGIN_DEG = 0.003
"""Margin of the DEM around the scene footprint (about 330 m north-south, 240 m east-west)."""


def sample_dem(
    grid: SceneGrid, elevation: NDArray[np.float64], lonlat_bounds: tuple[float, float, float, float]
) -> tuple[NDArray[np.float32], Affine]:
    """Resample the working-grid elevation (metres, EPSG:32643, 10 m) onto a 1" geographic grid.

    Bilinear in UTM at each geographic pixel centre, so a flat lake surface stays exactly flat.

    Args:
        grid: The scene grid whose working grid ``elevation`` is on.
        elevation: Metres.
        lonlat_bounds: (west, south, east, north) of the scene footprint, degrees.

    Returns:
        float32 metres (no voids, nodata -32767 is declared but unused) and its EPSG:4326 transform.
    """
    west, south, east, north = lonlat_bounds
    i0 = math.floor((west - MARGIN_DEG) * 3600)
    i1 = math.ceil((east + MARGIN_DEG) * 3600)
    j0 = math.ceil((north + MARGIN_DEG) * 3600)
    j1 = math.floor((south - MARGIN_DEG) * 3600)
    lon = (i0 + np.arange(i1 - i0 + 1)) * ARC_SECOND
    lat = (j0 - np.arange(j0 - j1 + 1)) * ARC_SECOND
    lon2, lat2 = np.meshgrid(lon, lat)
    x, y = Transformer.from_crs(4326, UTM_EPSG, always_xy=True).transform(lon2, lat2)
    t = grid.work_transform
    col = (x - t.c) / t.a - 0.5
    row = (y - t.f) / t.e - 0.5
    limit = grid.work_size - 1
    if min(col.min(), row.min()) < 0 or max(col.max(), row.max()) > limit:
        raise ValueError("the DEM extent exceeds the synthetic terrain: grow the working-grid margin")
    dem = ndimage.map_coordinates(elevation, [row, col], order=1, mode="nearest").astype(np.float32)
    transform = Affine(ARC_SECOND, 0.0, (i0 - 0.5) * ARC_SECOND, 0.0, -ARC_SECOND, (j0 + 0.5) * ARC_SECOND)
    return dem, transform
