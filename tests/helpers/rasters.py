"""Small GeoTIFFs for tests: a band stack on a 10 m north-up grid (default EPSG:32643)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

CRS = "EPSG:32643"
ORIGIN = (600_000.0, 4_800_000.0)
"""Upper-left corner (x, y) of the test grids, metres in :data:`CRS`."""


def write_bands(
    path: Path,
    data: np.ndarray,
    dtype: str,
    *,
    crs: str | None = CRS,
    origin: tuple[float, float] = ORIGIN,
    nodata: float | None = None,
) -> Path:
    """Writes ``data`` (bands, rows, cols) as ``dtype`` at 10 m from ``origin``; ``crs`` None: no CRS."""
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": dtype,
        "transform": from_origin(*origin, 10, 10),
        "nodata": nodata,
    }
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(dtype))
    return path
