"""Per-modality preprocessing onto the scene grid: Sentinel-2 L2A, Sentinel-1 σ⁰/γ⁰, Copernicus DEM.

Conventions of every array returned here:

* shape ``(H, W)`` or ``(bands, H, W)`` of the target :class:`~tasks.grid.GridSpec`, float32;
* nodata is NaN, never a fill value or zero;
* S2 is surface reflectance × 10 000 on the pre-04.00 scale (no ``BOA_ADD_OFFSET``), bands in
  TerraMind order :data:`S2_BANDS`; S1 is backscatter in dB, VV then VH; the DEM is metres.

Pure functions come first; the readers (rasterio, GDAL warper) are at the bottom.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from core.errors import RasterInputError

# One slope implementation, kept in the leaf package (models/ cannot import tasks/).
from models.baseline import slope_degrees
from tasks.acquisition import redact_urls, shown_href
from tasks.grid import GridSpec
from tasks.read_errors import NoPixelOnGrid, RemoteReadError, gdal_reason
from tasks.remote_read import remote_env
from tasks.s1_grd import linear_from_db_on_grid

# The backscatter helpers live with the other S1 concepts; re-exported for existing callers.
from tasks.sar import db_to_linear, lee_filter, sigma0_to_db

# The validity policy (SCL classes, clear and snow/ice masks) lives in tasks.validity; its names
# stay importable from here, where the S2 reader applies them.
from tasks.validity import CLOUD_SCL_CLASSES, SCL_INVALID_CLASSES, S2Offset, cloud_mask_from_scl, s2_validity

__all__ = [
    "BOA_ADD_OFFSET",
    "CLOUD_SCL_CLASSES",
    "S2_BANDS",
    "SCL_INVALID_CLASSES",
    "S2Scene",
    "cloud_mask_from_scl",
    "db_to_linear",
    "decide_s2_offset",
    "detect_s2_dn_offset",
    "harmonise_s2_dn",
    "lee_filter",
    "read_dem",
    "read_s1",
    "read_s2",
    "read_s2_file",
    "sigma0_to_db",
    "slope_degrees",
]

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
"""The 12 L2A bands in TerraMind (and CryoSentinel) order; B10 has no surface reflectance."""

BOA_ADD_OFFSET = 1000
"""DN offset added to L2A reflectance from processing baseline 04.00 (January 2022) on."""

_OFFSET_FROM_BASELINE = (4, 0)
WARP_THREADS = 1
"""GDAL warper threads per read (``benchmarks/stack_format.py``: threads over strips pay more)."""


@dataclass(frozen=True, eq=False)
class S2Scene:
    """One Sentinel-2 L2A scene on the scene grid.

    Attributes:
        reflectance: float32 ``(12, H, W)``, reflectance × 10 000 (pre-04.00 scale), bands in
            :data:`S2_BANDS` order, NaN where the product has no data.
        clear: bool ``(H, W)``: every band has data, SCL is neither no-data/defective nor cloud
            (without SCL: every band has data; see :mod:`tasks.validity`).
        cloud_fraction: Share of observed pixels (data, SCL not 0/1) that SCL flags as cloud
            or cloud shadow, 0–1 (1.0 when nothing was observed); NaN when no SCL was given
            (cloud state unknown, never "clear").
        snow_ice: bool ``(H, W)``, clear pixels SCL calls snow or ice; None without SCL (unknown).
        offset: How the +1000 DN offset was decided (baseline or detector), None where not recorded.
    """

    reflectance: NDArray[np.float32]
    clear: NDArray[np.bool_]
    cloud_fraction: float
    snow_ice: NDArray[np.bool_] | None = None
    offset: S2Offset | None = None


# --- pure functions --------------------------------------------------------------------------


def _baseline_tuple(processing_baseline: str) -> tuple[int, int]:
    """Parses "04.00", "N0400", "5.09" or "05.09" into (major, minor)."""
    text = processing_baseline.strip().upper().removeprefix("N")
    m = re.fullmatch(r"(\d{1,2})\.(\d{1,2})", text) or re.fullmatch(r"(\d{2})(\d{2})", text)
    if m is None:
        raise ValueError(f"unreadable Sentinel-2 processing baseline: {processing_baseline!r}")
    return int(m.group(1)), int(m.group(2))


def harmonise_s2_dn(dn: ArrayLike, processing_baseline: str) -> NDArray[np.float32]:
    """L2A digital numbers → reflectance × 10 000 on the pre-04.00 scale.

    From baseline 04.00 on, DN = reflectance × 10 000 + 1000. The offset is removed and values
    that would be negative are clipped to 0, which is how pre-04.00 products stored them, so
    scenes from both eras share one scale.

    Args:
        dn: L2A DN (uint16, or float where resampling already turned nodata into NaN).
            0 is nodata.
        processing_baseline: The product's ``PROCESSING_BASELINE``, e.g. "02.14" or "05.09".

    Returns:
        float32 array of the same shape; NaN where ``dn`` is 0 or NaN.
    """
    out = np.asarray(dn, dtype=np.float32).copy()
    out[out == 0] = np.nan
    if _baseline_tuple(processing_baseline) >= _OFFSET_FROM_BASELINE:
        out -= BOA_ADD_OFFSET
        np.maximum(out, 0.0, out=out)  # NaN stays NaN
    return out


OFFSET_DETECT_MIN_DN = 950.0
"""Every band's 1st percentile at or above this (DN) → the +1000 offset is in the file.

Harmonised L2A reflectance × 10 000 always has dark pixels somewhere: water, shadow and
vegetation are below 0.05 in the visible, snow and ice below 0.1 in B11/B12. With the offset
every band starts near 1000 (a few over-corrected pixels just below it)."""


def detect_s2_dn_offset(dn: NDArray[np.floating], percentile: float = 1.0) -> tuple[int, str]:
    """Whether L2A DN of unknown processing baseline still carry the +1000 ``BOA_ADD_OFFSET``.

    Args:
        dn: ``(12, N)`` or ``(12, H, W)`` DN sample; NaN or 0 = nodata.
        percentile: Low percentile tested per band.

    Returns:
        ``(offset, reason)``: 1000 or 0 DN, and a one-line reason with the evidence.
    """
    bands = np.asarray(dn, dtype=np.float64).reshape(dn.shape[0], -1)
    ok = np.isfinite(bands).all(axis=0) & (bands > 0).all(axis=0)
    if ok.sum() < 100:
        return 0, f"too few valid S2 pixels ({int(ok.sum())}) to test for the +1000 offset; none assumed"
    low = np.percentile(bands[:, ok], percentile, axis=1)
    if float(low.min()) >= OFFSET_DETECT_MIN_DN:
        return 1000, (
            f"every band's p{percentile:g} is ≥ {OFFSET_DETECT_MIN_DN:.0f} DN "
            f"(lowest {low.min():.0f}): un-harmonised baseline ≥ 04.00, 1000 removed"
        )
    return 0, f"no +1000 offset in S2 (band {int(low.argmin()) + 1}'s p{percentile:g} is {low.min():.0f} DN)"


def decide_s2_offset(
    processing_baseline: str | None, dn_bands: Sequence[NDArray[np.floating]], max_pixels: int = 1_000_000
) -> S2Offset:
    """The +1000 DN offset of one product: from its baseline, else from its pixels (never assumed).

    Args:
        processing_baseline: The product's baseline ("05.09"), or None when the item has none.
        dn_bands: The 12 bands' DN on the grid (NaN or 0 nodata).
        max_pixels: The detector reads an even sample of at most this many pixels per band.
    """
    if processing_baseline is not None:
        dn = BOA_ADD_OFFSET if _baseline_tuple(processing_baseline) >= _OFFSET_FROM_BASELINE else 0
        return S2Offset(dn, "baseline", f"processing baseline {processing_baseline}")
    step = max(1, -(-int(np.asarray(dn_bands[0]).size) // max_pixels))
    offset, reason = detect_s2_dn_offset(np.stack([np.asarray(b).ravel()[::step] for b in dn_bands]))
    return S2Offset(offset, "detector", reason)


# --- I/O: warp onto the grid -----------------------------------------------------------------


def _is_remote(href: str) -> bool:
    return "://" in href


def _gdal_env(href: str) -> Any:
    """GDAL options of one read; remote: timeouts, 429/5xx retries, S3 credentials (``tasks.remote_read``)."""
    import rasterio

    if not _is_remote(href):
        return rasterio.Env()
    return remote_env(href)


def _read_failure(href: str, exc: Exception) -> Exception:
    """One line naming the file and GDAL's cause: a bad local file is bad input, a remote failure is not."""
    reason = redact_urls(gdal_reason(exc))
    if _is_remote(href):
        return RemoteReadError(f"{shown_href(href)}: remote read failed ({reason})")
    return RasterInputError(f"{href}: unreadable raster ({reason})")


@contextmanager
def open_raster(href: str) -> Iterator[Any]:
    """The dataset at ``href``, opened under its read's GDAL options (:func:`_gdal_env`) and closed after.

    A failure to open is :func:`_read_failure`'s one line naming the file; the options stay in
    force for every read of the ``with`` block.
    """
    import rasterio
    from rasterio.errors import RasterioError

    with _gdal_env(href):
        try:
            ds = rasterio.open(href)
        except RasterioError as exc:
            raise _read_failure(href, exc) from None
        with ds:
            yield ds


def _warp(
    href: str,
    grid: GridSpec,
    *,
    band: int = 1,
    resampling: str = "bilinear",
    src_nodata: float | None = None,
    dtype: str = "float32",
) -> NDArray[Any]:
    """Warps one band of a raster onto ``grid`` with the GDAL warper.

    The source is read block by block by GDAL (COGs over HTTP included, with the timeouts of
    :data:`tasks.acquisition.REMOTE_TIMEOUT_S`), so memory is bounded by the grid, not the source.
    Float output gets NaN where the source has no data or does not cover the grid; integer output
    gets 0 there.

    Raises:
        RasterInputError: the file is unreadable, not georeferenced, or (float output) leaves no
            valid pixel on the grid: a wrong CRS or an extent that misses the AOI, named with the
            file's CRS and bounds. OSError: a remote read failed (timeout, HTTP error).
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    fill = np.nan if np.dtype(dtype).kind == "f" else 0
    dst = np.full(grid.shape, fill, dtype=dtype)
    with open_raster(href) as ds:
        if ds.crs is None and not ds.gcps[0]:
            raise RasterInputError(f"{href}: raster is not georeferenced (no CRS, no GCPs)")
        nodata = ds.nodata if src_nodata is None else src_nodata
        if nodata is None and np.dtype(ds.dtypes[band - 1]).kind == "f":
            nodata = np.nan
        try:
            reproject(
                source=rasterio.band(ds, band),
                destination=dst,
                src_nodata=nodata,
                dst_transform=grid.affine,
                dst_crs=grid.crs,
                dst_nodata=fill,
                resampling=Resampling[resampling],
                num_threads=WARP_THREADS,
            )
        except Exception as exc:  # GDAL's CPLE_* errors ("Chunk and warp failed") name no file
            raise _read_failure(href, exc) from None
        if np.dtype(dtype).kind == "f" and not np.isfinite(dst).any():
            crs = ds.crs.to_string() if ds.crs is not None else "GCPs"
            raise NoPixelOnGrid(
                f"{href}: no valid pixel on the scene grid (EPSG:{grid.epsg}); the raster's CRS {crs} and "
                f"bounds {tuple(round(v, 3) for v in ds.bounds)} miss the AOI, or it holds only nodata"
            )
    return dst


def _s2_from_dn(
    dn_bands: list[NDArray[np.float32]], scl: NDArray[Any] | None, processing_baseline: str | None
) -> S2Scene:
    offset = decide_s2_offset(processing_baseline, dn_bands)
    # harmonise_s2_dn keys the offset on a baseline: the product's own, or one the decision stands for.
    baseline = processing_baseline or ("04.00" if offset.dn else "00.00")
    refl = np.stack([harmonise_s2_dn(b, baseline) for b in dn_bands]).astype(np.float32)
    validity = s2_validity(np.asarray(np.isfinite(refl).all(axis=0), dtype=np.bool_), scl)
    return S2Scene(refl, validity.clear, validity.cloud_fraction, validity.snow_ice, offset)


def read_s2(
    band_hrefs: Mapping[str, str],
    scl_href: str | None,
    processing_baseline: str | None,
    grid: GridSpec,
) -> S2Scene:
    """Reads per-band L2A COGs (10/20/60 m, uint16 DN, nodata 0) onto the 10 m grid.

    Bands are resampled bilinearly, SCL by nearest neighbour; the offset is removed
    (:func:`harmonise_s2_dn`) as :func:`decide_s2_offset` decides it.

    Args:
        band_hrefs: Band name (:data:`S2_BANDS`) → path or URL of a single-band raster.
        scl_href: The SCL raster (uint8 ESA classes), or None: then no pixel is masked as cloud
            and the scene's cloud state is unknown (NaN cloud fraction, no snow/ice mask).
        processing_baseline: The product's processing baseline, e.g. "05.09"; None when the
            product states none: the offset detector decides (recorded in ``S2Scene.offset``).
        grid: Target grid.

    Raises:
        KeyError: A band of :data:`S2_BANDS` is missing from ``band_hrefs``.
    """
    missing = [b for b in S2_BANDS if b not in band_hrefs]
    if missing:
        raise KeyError(f"Sentinel-2 bands missing: {', '.join(missing)}")
    dn = [_warp(band_hrefs[b], grid, src_nodata=0) for b in S2_BANDS]
    scl = None if scl_href is None else _warp(scl_href, grid, resampling="nearest", dtype="uint8")
    return _s2_from_dn(dn, scl, processing_baseline)


def read_s2_file(href: str, processing_baseline: str | None, grid: GridSpec, scl_href: str | None = None) -> S2Scene:
    """Like :func:`read_s2` for one 12-band file with bands in :data:`S2_BANDS` order."""
    import rasterio

    with rasterio.open(href) as ds:
        if ds.count != len(S2_BANDS):
            raise RasterInputError(f"{href}: expected {len(S2_BANDS)} bands, found {ds.count}")
    dn = [_warp(href, grid, band=i, src_nodata=0) for i in range(1, len(S2_BANDS) + 1)]
    scl = None if scl_href is None else _warp(scl_href, grid, resampling="nearest", dtype="uint8")
    return _s2_from_dn(dn, scl, processing_baseline)


def read_s1(
    vv_href: str,
    vh_href: str,
    grid: GridSpec,
    *,
    linear: bool = True,
    speckle_size: int = 5,
) -> NDArray[np.float32]:
    """Reads calibrated S1 VV and VH backscatter onto the grid, speckle-filters and converts to dB.

    For files whose scale the caller states (``linear``). A catalog acquisition is read by
    :func:`tasks.s1_read.read_s1_acquisition` instead, which decides RTC γ⁰ linear vs dB from
    metadata and values, and calibrates GRD DN with its LUT: DN must never come through here.
    Resampling (bilinear) and the Lee filter work on linear power; inputs given in dB are
    converted first (from the window over the grid: resampled in power, not in dB). Sources may
    be on any grid, or GCP-georeferenced when linear (GDAL's warper uses the GCPs). Nodata: the
    file's nodata tag, else NaN; values ≤ 0 in linear power are nodata.

    Args:
        vv_href: VV raster (float32 σ⁰ or γ⁰).
        vh_href: VH raster.
        grid: Target grid.
        linear: True when the rasters hold linear power, False when they hold dB.
        speckle_size: Lee window in pixels; 1 disables the filter.

    Returns:
        float32 ``(2, H, W)``: VV, VH in dB, NaN nodata.
    """
    out = []
    for href in (vv_href, vh_href):
        band = _warp(href, grid) if linear else _warp_db_as_linear(href, grid)
        if speckle_size > 1:
            band = lee_filter(band, speckle_size)
        out.append(sigma0_to_db(band))
    return np.stack(out)


def _warp_db_as_linear(href: str, grid: GridSpec, src_nodata: float | None = None) -> NDArray[np.float32]:
    """A geocoded dB raster as linear power on the grid, resampled in power (:mod:`tasks.s1_grd`)."""
    import rasterio
    from rasterio._err import CPLE_BaseError  # GDAL's own errors: no public alias in rasterio.errors
    from rasterio.errors import RasterioError

    with _gdal_env(href):
        try:
            with rasterio.open(href) as ds:
                return linear_from_db_on_grid(ds, grid, href, src_nodata)
        except (RasterioError, CPLE_BaseError) as exc:
            raise _read_failure(href, exc) from None


def read_dem(href: str, grid: GridSpec, *, nodata: float | None = None) -> NDArray[np.float32]:
    """Reads one DEM file (any CRS, e.g. GLO-30 in EPSG:4326) onto the grid, bilinear.

    Several tiles (an AOI across a tile edge): :func:`tasks.dem.read_dem_tiles`, one warp of their mosaic.

    Args:
        href: DEM raster, metres.
        grid: Target grid.
        nodata: Overrides the file's nodata tag (for files that lack one).

    Returns:
        float32 ``(H, W)`` metres, NaN nodata.
    """
    return _warp(href, grid, src_nodata=nodata)
