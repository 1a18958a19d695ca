"""Sentinel-1 GRD: DN → σ⁰ with the product's calibration LUT, geocoded through its geolocation grid.

ESA's GRD measurement rasters (and Planetary Computer's ``sentinel-1-grd`` COGs made from them)
hold uint16 amplitude DN in radar geometry: rows are azimuth lines, columns ground-range
samples, and the file has GCPs but no geotransform. Calibration is

    σ⁰ = DN² / A_σ²

with ``A_σ`` bilinearly interpolated (in line, then pixel) from the ``sigmaNought`` lists of the
``calibrationVector`` entries of ``annotation/calibration/calibration-*.xml`` (one vector every
~667 lines, one value every 40 samples). Geocoding uses the annotation's ``geolocationGrid``
(line, pixel → latitude, longitude, height; 10 × 21 points for IW) as GCPs in EPSG:4326,
warped by GDAL with a thin-plate spline, which passes through every GCP (GDAL's default, a
global GCP polynomial, misplaces mid-swath pixels by ~330 m on the real IW product).

Thermal-noise removal (``noise-*.xml``, :mod:`tasks.s1_noise`) is done when the caller passes
the noise: ``σ⁰ = (DN² − N) / A_σ²``, clipped at :data:`NOISE_FLOOR_SIGMA0`. SAFE products carry
their noise XML (:mod:`tasks.safe_s1`); STAC GRD items are read without it, which leaves the dark
end (VH over calm water and smooth ice sits near IW's noise floor, ≈ −22 to −25 dB) up to a few dB
too bright: water stays the darkest surface, but σ⁰ there is biased high against the CryoSentinel
recipe, which removes the noise.

Not done (stated, not hidden):

* terrain correction: the geolocation grid places its points at their annotated heights, but
  between points (≈ 1.3 km × 20 km apart) relief displaces pixels (foreshortening, layover: up
  to hundreds of metres on steep slopes). This is why pairing prefers RTC where it exists.

Memory is bounded by the scene grid: only the radar-geometry window that covers the grid is
read (found from the geolocation grid's cells), calibrated and warped.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from core.errors import RasterInputError
from tasks.acquisition import REMOTE_TIMEOUT_S
from tasks.grid import GridSpec
from tasks.read_errors import NoPixelOnGrid
from tasks.sar import db_to_linear

__all__ = [
    "MAX_XML_BYTES",
    "NOISE_FLOOR_SIGMA0",
    "CalibrationLut",
    "GeolocationGrid",
    "calibrated_sigma0_on_grid",
    "geocoded_window",
    "linear_from_db_on_grid",
    "parse_annotation",
    "parse_calibration",
    "range_vectors",
    "read_xml",
    "xml_numbers",
    "xml_root",
]

MAX_XML_BYTES = 32 * 1024 * 1024
"""Largest annotation / calibration XML read, bytes (real IW files are 1–2 MB)."""

NOISE_FLOOR_SIGMA0 = 1e-4
"""Linear σ⁰ (−40 dB) that noise-subtracted values are clipped at: below any C-band surface the
segmenter sees (calm water ≈ −25 to −30 dB), so a pixel whose DN² is at or under the noise stays
finite and reads as the darkest possible return instead of NaN or a negative power."""

NoiseAt = Callable[[NDArray[Any], NDArray[Any]], NDArray[np.float64]]
"""``noise_at(rows, cols)``: thermal noise power (DN²) on ``rows`` × ``cols`` (:class:`tasks.s1_noise.NoiseLut`)."""

_WINDOW_PAD = 4
"""Radar pixels added around the window that covers the grid (bilinear needs its neighbours)."""

_MESH_STEP = 64
"""Radar pixels between the points of the densified geolocation mesh that finds the window."""


@dataclass(frozen=True, eq=False)
class CalibrationLut:
    """The σ⁰ calibration LUT of one GRD polarisation.

    Attributes:
        lines: ``(n,)`` azimuth line of each calibration vector, increasing.
        pixels: One ``(m_i,)`` array of range samples per vector, increasing.
        sigma: One ``(m_i,)`` array of ``A_σ`` (amplitude scale, unitless) per vector.
        polarisation: "VV", "VH", … as the XML's ``adsHeader`` says.
    """

    lines: NDArray[np.float64]
    pixels: tuple[NDArray[np.float64], ...]
    sigma: tuple[NDArray[np.float64], ...]
    polarisation: str

    def sigma_at(self, rows: NDArray[Any], cols: NDArray[Any]) -> NDArray[np.float64]:
        """``A_σ`` at every (row, col) of the product of ``rows`` × ``cols`` (image line / sample indices).

        Bilinear: each vector is interpolated linearly along its samples at ``cols``, then the
        two vectors around each row linearly in line. Outside the vectors' span the edge value
        holds (the last vector of a product may lie past its last line).

        Returns:
            ``(len(rows), len(cols))`` float64.
        """
        cols = np.asarray(cols, dtype=np.float64)
        rows = np.asarray(rows, dtype=np.float64)
        per_vector = np.stack([np.interp(cols, p, s) for p, s in zip(self.pixels, self.sigma, strict=True)])
        if len(self.lines) == 1:
            return np.broadcast_to(per_vector[0], (len(rows), len(cols))).copy()
        i = np.clip(np.searchsorted(self.lines, rows, side="right") - 1, 0, len(self.lines) - 2)
        l0, l1 = self.lines[i], self.lines[i + 1]
        w = np.clip((rows - l0) / (l1 - l0), 0.0, 1.0)[:, np.newaxis]
        out: NDArray[np.float64] = per_vector[i] * (1.0 - w) + per_vector[i + 1] * w
        return out


@dataclass(frozen=True, eq=False)
class GeolocationGrid:
    """The annotation's geolocation grid and image size of one GRD polarisation.

    Attributes:
        lines: ``(n,)`` image line of each point (pixel-centre index, as ESA annotates).
        pixels: ``(n,)`` image sample of each point.
        lat, lon: ``(n,)`` degrees, EPSG:4326.
        height: ``(n,)`` metres above the WGS84 ellipsoid.
        shape: ``(numberOfLines, numberOfSamples)`` of the measurement raster.
        polarisation: "VV", "VH", …
    """

    lines: NDArray[np.float64]
    pixels: NDArray[np.float64]
    lat: NDArray[np.float64]
    lon: NDArray[np.float64]
    height: NDArray[np.float64]
    shape: tuple[int, int]
    polarisation: str

    def gcps(self, row_off: int = 0, col_off: int = 0) -> list[Any]:
        """The points as rasterio GCPs (x = lon, y = lat, z = height) for a window at ``(row_off, col_off)``.

        GDAL places integer GCP coordinates on pixel corners, ESA's annotation indexes pixel
        centres: 0.5 is added so a GCP sits on the centre of the pixel it was computed for.
        """
        from rasterio.control import GroundControlPoint

        return [
            GroundControlPoint(row=r - row_off + 0.5, col=c - col_off + 0.5, x=x, y=y, z=z, id=str(k))
            for k, (r, c, x, y, z) in enumerate(
                zip(self.lines, self.pixels, self.lon, self.lat, self.height, strict=True)
            )
        ]

    def window_over(self, grid: GridSpec, where: str) -> tuple[int, int, int, int]:
        """``(row_off, col_off, height, width)`` of the radar-geometry window that covers ``grid``.

        Each cell of the line × pixel mesh whose projected corners' box meets the grid's bounds
        is part of it; a few pixels of margin are added.

        Raises:
            RasterInputError: the grid is not a full line × pixel mesh, or no cell meets the grid.
        """
        from pyproj import Transformer
        from scipy.interpolate import RegularGridInterpolator

        lines, pixels = np.unique(self.lines), np.unique(self.pixels)
        if len(lines) * len(pixels) != len(self.lines) or len(lines) < 2 or len(pixels) < 2:
            raise RasterInputError(
                f"{where}: geolocation grid is not a full line × pixel mesh ({len(self.lines)} points)"
            )
        order = np.lexsort((self.pixels, self.lines))
        to_grid = Transformer.from_crs(4326, grid.epsg, always_xy=True)
        x, y = to_grid.transform(self.lon[order], self.lat[order])
        x, y = np.reshape(x, (len(lines), len(pixels))), np.reshape(y, (len(lines), len(pixels)))
        # The mesh's cells are ~20 × 13 km: a mesh interpolated bilinearly every _MESH_STEP pixels
        # keeps the window close to the grid (its error, metres, is covered by one step of margin).
        fine = [np.unique(np.append(np.arange(v[0], v[-1], _MESH_STEP), v[-1])) for v in (lines, pixels)]
        at = np.stack(np.meshgrid(*fine, indexing="ij"), axis=-1)
        x = RegularGridInterpolator((lines, pixels), x)(at)
        y = RegularGridInterpolator((lines, pixels), y)(at)
        lines, pixels = fine
        corners_x = np.stack([x[:-1, :-1], x[1:, :-1], x[:-1, 1:], x[1:, 1:]])
        corners_y = np.stack([y[:-1, :-1], y[1:, :-1], y[:-1, 1:], y[1:, 1:]])
        left, bottom, right, top = grid.bounds
        meets = (
            (corners_x.min(axis=0) <= right)
            & (corners_x.max(axis=0) >= left)
            & (corners_y.min(axis=0) <= top)
            & (corners_y.max(axis=0) >= bottom)
        )
        if not meets.any():
            raise NoPixelOnGrid(
                f"{where}: the product's geolocation grid does not reach the scene grid (EPSG:{grid.epsg})"
            )
        ii, jj = np.nonzero(meets)
        pad = _WINDOW_PAD + _MESH_STEP
        r0 = max(int(lines[ii.min()]) - pad, 0)
        r1 = min(int(lines[ii.max() + 1]) + pad + 1, self.shape[0])
        c0 = max(int(pixels[jj.min()]) - pad, 0)
        c1 = min(int(pixels[jj.max() + 1]) + pad + 1, self.shape[1])
        return r0, c0, r1 - r0, c1 - c0


# --- XML -----------------------------------------------------------------------------------------


def read_xml(href: str) -> bytes:
    """The bytes of one metadata XML, a local path or an http(s) URL, at most :data:`MAX_XML_BYTES`.

    Raises:
        RasterInputError: a local file is missing, unreadable or too large.
        OSError: a remote read failed (timeout, HTTP error): retryable, not bad input.
    """
    if href.startswith("/vsizip/"):  # built by tasks.safe_files from a checked zip, never from user input
        from tasks.safe_files import read_vsizip_member

        return read_vsizip_member(href)
    if "://" not in href:
        path = Path(href)
        try:
            if path.stat().st_size > MAX_XML_BYTES:
                raise RasterInputError(f"{href}: metadata XML larger than {MAX_XML_BYTES} bytes")
            return path.read_bytes()
        except OSError as exc:
            raise RasterInputError(f"{href}: unreadable metadata XML ({exc.strerror})") from None
    import requests

    try:
        with requests.get(href, timeout=REMOTE_TIMEOUT_S, stream=True) as resp:
            resp.raise_for_status()
            body = resp.raw.read(MAX_XML_BYTES + 1, decode_content=True)
    except requests.RequestException as exc:
        raise OSError(f"{href}: remote read failed ({str(exc).splitlines()[0][:300]})") from None
    if len(body) > MAX_XML_BYTES:
        raise RasterInputError(f"{href}: metadata XML larger than {MAX_XML_BYTES} bytes")
    return bytes(body)


def xml_root(data: bytes, href: str, tag: str) -> ET.Element:
    """The root of an S1 annotation-set XML document, checked to be ``<tag>`` (``RasterInputError`` naming ``href``)."""
    # ElementTree resolves no external entities, and the expat it uses refuses entity expansion
    # attacks (billion laughs), so a hostile catalog's XML cannot reach files or explode memory.
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise RasterInputError(f"{href}: not XML ({exc})") from None
    if root.tag != tag:
        raise RasterInputError(f"{href}: expected a Sentinel-1 <{tag}> document, found <{root.tag}>")
    return root


def xml_numbers(node: ET.Element | None, href: str, what: str) -> NDArray[np.float64]:
    """The whitespace-separated numbers of ``node`` (``RasterInputError`` naming ``href`` and ``what``)."""
    if node is None or not (node.text or "").strip():
        raise RasterInputError(f"{href}: {what} missing")
    try:
        return np.array(node.text.split() if node.text else [], dtype=np.float64)
    except ValueError:
        raise RasterInputError(f"{href}: {what} is not a list of numbers") from None


def range_vectors(
    vectors: list[ET.Element],
    href: str,
    tag: str,
    values: str,
    usable: Callable[[NDArray[np.float64]], bool],
) -> tuple[NDArray[np.float64], tuple[NDArray[np.float64], ...], tuple[NDArray[np.float64], ...]]:
    """(lines, pixels per vector, values per vector) of per-line range vectors (calibration, noise).

    Each ``<tag>`` element holds a ``line``, a ``pixel`` list and a ``values`` list of the same
    length; pixels must increase within a vector and lines across vectors, and ``usable`` must
    accept the values (σ⁰ coefficients positive, noise power non-negative).

    Raises:
        RasterInputError: naming ``href`` and the vector: a list missing or not numbers, counts
            that differ, pixels or lines not increasing, values ``usable`` refuses.
    """
    lines, pixels, out = [], [], []
    for k, vec in enumerate(vectors):
        line = xml_numbers(vec.find("line"), href, f"{tag} {k} line")
        pix = xml_numbers(vec.find("pixel"), href, f"{tag} {k} pixel")
        val = xml_numbers(vec.find(values), href, f"{tag} {k} {values}")
        if len(pix) != len(val) or np.any(np.diff(pix) <= 0) or not usable(val):
            raise RasterInputError(f"{href}: {tag} {k} has unusable pixel/{values} lists")
        lines.append(float(line[0]))
        pixels.append(pix)
        out.append(val)
    line_arr = np.array(lines)
    if np.any(np.diff(line_arr) <= 0):
        raise RasterInputError(f"{href}: {tag} lines do not increase")
    return line_arr, tuple(pixels), tuple(out)


def parse_calibration(data: bytes, href: str) -> CalibrationLut:
    """The σ⁰ LUT of a ``calibration-*.xml``.

    Raises:
        RasterInputError: naming ``href``: not a calibration document, no vectors, a vector whose
            pixel and sigmaNought counts differ, or lines/pixels not increasing.
    """
    root = xml_root(data, href, "calibration")
    vectors = root.findall("calibrationVectorList/calibrationVector")
    if not vectors:
        raise RasterInputError(f"{href}: no calibrationVector")
    line_arr, pixels, sigma = range_vectors(
        vectors, href, "calibrationVector", "sigmaNought", lambda v: len(v) > 0 and bool(np.all(v > 0))
    )
    pol = (root.findtext("adsHeader/polarisation") or "").strip().upper()
    return CalibrationLut(line_arr, pixels, sigma, pol)


def parse_annotation(data: bytes, href: str) -> GeolocationGrid:
    """The geolocation grid and image size of a product annotation ``s1?-*-grd-*.xml``.

    Raises:
        RasterInputError: naming ``href``: not a product annotation, no image size, fewer than
            4 geolocation grid points.
    """
    root = xml_root(data, href, "product")
    info = root.find("imageAnnotation/imageInformation")
    try:
        n_lines = int(info.findtext("numberOfLines", "") if info is not None else "")
        n_samples = int(info.findtext("numberOfSamples", "") if info is not None else "")
    except ValueError:
        raise RasterInputError(f"{href}: imageInformation lacks numberOfLines/numberOfSamples") from None
    points = root.findall("geolocationGrid/geolocationGridPointList/geolocationGridPoint")
    if len(points) < 4:
        raise RasterInputError(f"{href}: {len(points)} geolocation grid points; at least 4 are needed")
    fields = ("line", "pixel", "latitude", "longitude", "height")
    try:
        table = np.array([[float(p.findtext(f, "nan")) for f in fields] for p in points])
    except ValueError:
        raise RasterInputError(f"{href}: a geolocation grid point is not numeric") from None
    if not np.isfinite(table).all():
        raise RasterInputError(f"{href}: a geolocation grid point lacks one of {', '.join(fields)}")
    pol = (root.findtext("adsHeader/polarisation") or "").strip().upper()
    line, pixel, lat, lon, height = table.T
    return GeolocationGrid(line, pixel, lat, lon, height, shape=(n_lines, n_samples), polarisation=pol)


# --- calibrate and geocode -----------------------------------------------------------------------


def calibrated_sigma0_on_grid(
    ds: Any, lut: CalibrationLut, geo: GeolocationGrid, grid: GridSpec, where: str, noise: NoiseAt | None = None
) -> NDArray[np.float32]:
    """σ⁰ (linear power) of an open GRD DN raster on ``grid``: calibrated, then warped bilinearly.

    Radar geometry (no CRS): the window over the grid is read, calibrated and warped through
    the geolocation grid's GCPs (thin-plate spline). Already geocoded (a CRS and geotransform):
    calibrated only when the raster is the LUT's image (same lines × samples), then warped with
    its own geotransform.

    Args:
        ds: An open rasterio dataset of DN (band 1; 0 = no data, as in ESA's products).
        lut: The polarisation's σ⁰ calibration LUT.
        geo: The same polarisation's geolocation grid and image size.
        grid: Target grid.
        where: The item and asset, for messages.
        noise: The polarisation's thermal noise (DN²); given, it is subtracted from DN² before
            calibration and the result clipped at :data:`NOISE_FLOOR_SIGMA0`.

    Returns:
        float32 ``(H, W)`` linear σ⁰, NaN nodata.

    Raises:
        RasterInputError: sizes disagree, the raster is not integer DN, or nothing lands on the grid.
    """
    from rasterio.crs import CRS
    from rasterio.windows import Window

    if np.dtype(ds.dtypes[0]).kind not in "ui":
        raise RasterInputError(
            f"{where}: GRD DN must be integer, found {ds.dtypes[0]}; calibrated float σ⁰ must say so in its metadata"
        )
    if (ds.height, ds.width) != geo.shape:
        raise RasterInputError(
            f"{where}: raster is {ds.height} × {ds.width} but its calibration/annotation describe "
            f"{geo.shape[0]} × {geo.shape[1]} (lines × samples): the LUT does not apply; refused"
        )
    src: dict[str, Any]
    if ds.crs is None:
        r0, c0, h, w = geo.window_over(grid, where)
        src = {"gcps": geo.gcps(r0, c0), "src_crs": CRS.from_epsg(4326), "SRC_METHOD": "GCP_TPS"}
    else:
        r0, c0, h, w = geocoded_window(ds, grid, where)
        src = {"src_transform": ds.window_transform(Window(c0, r0, w, h)), "src_crs": ds.crs}
    dn = ds.read(1, window=Window(c0, r0, w, h)).astype(np.float32)
    nodata = dn == 0 if ds.nodata is None else (dn == 0) | (dn == ds.nodata)
    rows, cols = np.arange(r0, r0 + h), np.arange(c0, c0 + w)
    a = lut.sigma_at(rows, cols).astype(np.float32)
    power = dn * dn
    if noise is not None:
        power = np.maximum((power - noise(rows, cols).astype(np.float32)) / (a * a), np.float32(NOISE_FLOOR_SIGMA0))
    else:
        power = power / (a * a)
    sigma0 = np.where(nodata, np.float32(np.nan), power).astype(np.float32)
    del dn, a, power
    return _onto_grid(sigma0, grid, where, **src)


def geocoded_window(ds: Any, grid: GridSpec, where: str) -> tuple[int, int, int, int]:
    """``(row_off, col_off, height, width)`` of a geocoded raster's window over ``grid``, with margin.

    Raises:
        RasterInputError: the raster's bounds miss the grid.
    """
    from rasterio.warp import transform_bounds
    from rasterio.windows import from_bounds

    left, bottom, right, top = transform_bounds(grid.crs, ds.crs, *grid.bounds)
    win = from_bounds(left, bottom, right, top, transform=ds.transform)
    r0 = max(math.floor(win.row_off) - _WINDOW_PAD, 0)
    c0 = max(math.floor(win.col_off) - _WINDOW_PAD, 0)
    h = min(math.ceil(win.row_off + win.height) + _WINDOW_PAD, ds.height) - r0
    w = min(math.ceil(win.col_off + win.width) + _WINDOW_PAD, ds.width) - c0
    if h <= 0 or w <= 0:
        crs = ds.crs.to_string()
        raise NoPixelOnGrid(f"{where}: the raster's bounds ({crs}) miss the scene grid (EPSG:{grid.epsg})")
    return r0, c0, h, w


def linear_from_db_on_grid(ds: Any, grid: GridSpec, where: str, src_nodata: float | None = None) -> NDArray[np.float32]:
    """A geocoded backscatter raster in dB, as linear power on ``grid`` (resampled in power).

    Averaging dB instead of power biases speckled, dark surfaces low (the mean of a log is below
    the log of the mean); so the window over the grid is read, converted, then warped bilinearly.

    Args:
        ds: An open rasterio dataset with a CRS (band 1 in dB).
        grid: Target grid.
        where: The file or item, for messages.
        src_nodata: Overrides the file's nodata tag.

    Raises:
        RasterInputError: the raster has no CRS (GCPs only), or nothing lands on the grid.
    """
    from rasterio.windows import Window

    if ds.crs is None:
        raise RasterInputError(f"{where}: backscatter in dB with no CRS (GCPs only) is not supported; geocode it first")
    r0, c0, h, w = geocoded_window(ds, grid, where)
    db = ds.read(1, window=Window(c0, r0, w, h)).astype(np.float64)
    nodata = ds.nodata if src_nodata is None else src_nodata
    if nodata is not None and not math.isnan(nodata):
        db[db == nodata] = np.nan
    linear = db_to_linear(db)
    return _onto_grid(linear, grid, where, src_transform=ds.window_transform(Window(c0, r0, w, h)), src_crs=ds.crs)


def _onto_grid(values: NDArray[np.float32], grid: GridSpec, where: str, **src: Any) -> NDArray[np.float32]:
    """Bilinear warp of an in-memory float32 array (NaN nodata) onto ``grid``; refused when all NaN."""
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    dst = np.full(grid.shape, np.nan, dtype=np.float32)
    reproject(
        source=values,
        destination=dst,
        src_nodata=np.nan,
        dst_transform=grid.affine,
        dst_crs=grid.crs,
        dst_nodata=np.nan,
        resampling=Resampling.bilinear,
        **src,
    )
    if not np.isfinite(dst).any():
        raise NoPixelOnGrid(f"{where}: no valid pixel on the scene grid (EPSG:{grid.epsg})")
    return dst
