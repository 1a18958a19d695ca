"""A synthetic S2 / S1 / DEM scene whose S1 and DEM are misregistered by a known sub-pixel offset.

One field (lakes on textured land) is written three times: as S2 L2A DN (every band), as S1 VV/VH
linear power and as a DEM in metres, each a monotonic copy of the field, on 10 m pixels in UTM 45N.
The S1 and DEM files' georeference is moved by the offset, so their content lands ``(dy, dx)``
pixels south/east of the S2 content once warped onto the scene grid: the misregistration the
pipeline's co-registration must measure and remove. Used by ``tests/unit/test_coregister.py`` and
``benchmarks/coregistration.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from scipy import ndimage
from shapely.geometry import box

from tasks.grid import GridSpec
from tasks.pairing import ScenePlan
from tasks.preprocess import S2_BANDS
from tasks.sources import Acquisition

EPSG = 32645
X0, Y0 = 470_000.0, 3_090_000.0
PIXEL = 10.0
MARGIN = 16
"""Source pixels beyond the grid on every side, so a shifted source still covers the whole grid."""
T0 = datetime(2024, 7, 4, 5, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Pair:
    plan: ScenePlan
    grid: GridSpec
    offset_s1: tuple[float, float]
    offset_dem: tuple[float, float]


def field(size: int, seed: int) -> np.ndarray:
    """Land (1) with lakes (0) and texture, ``size + 2·MARGIN`` pixels a side, smooth at the 10 m scale."""
    rng = np.random.default_rng(seed)
    n = size + 2 * MARGIN
    blobs = ndimage.gaussian_filter(rng.normal(size=(n, n)), 6.0)
    land = ndimage.gaussian_filter((blobs < np.quantile(blobs, 0.8)).astype(np.float64), 1.0)
    texture = ndimage.gaussian_filter(rng.normal(size=(n, n)), 2.0)
    return land + 1.5 * texture


def _write(path: Path, bands: np.ndarray, left: float, top: float, dtype: str, nodata: float | None) -> str:
    profile = {
        "driver": "GTiff",
        "width": bands.shape[-1],
        "height": bands.shape[-2],
        "count": bands.shape[0],
        "dtype": dtype,
        "crs": f"EPSG:{EPSG}",
        "transform": from_origin(left, top, PIXEL, PIXEL),
        **({"nodata": nodata} if nodata is not None else {}),
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(bands.astype(dtype))
    return str(path)


def write_pair(
    root: Path,
    offset_s1: tuple[float, float],
    offset_dem: tuple[float, float] | None = None,
    *,
    size: int = 256,
    seed: int = 0,
    s1_unrelated: bool = False,
) -> Pair:
    """Writes the scene under ``root`` and returns its plan and grid.

    Args:
        root: Folder for the files.
        offset_s1: ``(dy, dx)`` pixels: S1 content south/east of the S2 content on the grid.
        offset_dem: Same for the DEM (default: the S1 offset).
        size: Grid side, pixels.
        seed: The field's seed.
        s1_unrelated: S1 from another seed's field (nothing in common with S2: no true offset).
    """
    offset_dem = offset_s1 if offset_dem is None else offset_dem
    root.mkdir(parents=True, exist_ok=True)
    f = field(size, seed)
    left, top = X0 - MARGIN * PIXEL, Y0 + MARGIN * PIXEL
    s2 = _write(root / "s2.tif", (400.0 + 1500.0 * f)[np.newaxis].clip(1, 10_000), left, top, "uint16", 0)
    g = field(size, seed + 1000) if s1_unrelated else f
    vv = 10.0 ** ((-20.0 + 6.0 * g) / 10.0)
    dy, dx = offset_s1
    vv_href = _write(root / "vv.tif", vv[np.newaxis], left + dx * PIXEL, top - dy * PIXEL, "float32", None)
    vh_href = _write(root / "vh.tif", 0.2 * vv[np.newaxis], left + dx * PIXEL, top - dy * PIXEL, "float32", None)
    dy, dx = offset_dem
    dem = _write(
        root / "dem.tif", (4500.0 + 25.0 * f)[np.newaxis], left + dx * PIXEL, top - dy * PIXEL, "float32", -32767
    )
    grid = GridSpec(EPSG, (PIXEL, 0.0, X0, 0.0, -PIXEL, Y0), size, size)
    foot = box(86.0, 27.0, 87.0, 28.0)

    def acq(
        pid: str, kind: str, assets: tuple[tuple[str, str], ...], metadata: tuple[tuple[str, str], ...] = ()
    ) -> Acquisition:
        return Acquisition(
            pid, kind, "synthetic", T0, foot, assets, "local:test", processing_baseline="02.14", metadata=metadata
        )

    # Calibrated σ⁰ in linear power, as the metadata says (tasks.sar reads it by what it is).
    sigma0 = tuple((f"{p}.title", "sigma0, linear power") for p in ("vv", "vh"))

    plan = ScenePlan(
        s2=acq("S2-synthetic", "S2L2A", tuple((b, s2) for b in S2_BANDS)),
        s1=acq("S1-synthetic", "S1GRD", (("vv", vv_href), ("vh", vh_href)), sigma0),
        dems=(acq("DEM-synthetic", "DEM", (("data", dem),)),),
    )
    return Pair(plan, grid, offset_s1, offset_dem)
