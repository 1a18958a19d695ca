"""One Sentinel-1 acquisition onto the scene grid, read by what it is (RTC γ⁰ or GRD σ⁰).

* ``S1RTC``, or an ``S1GRD`` whose catalog declares calibrated σ⁰: the VV/VH assets are warped
  as they are, their scale (linear power or dB) decided from metadata and confirmed from the
  values on the grid (:func:`tasks.sar.decide_scale`; a contradiction is refused).
* ``S1GRD`` otherwise (ESA's DN in radar geometry, e.g. Planetary Computer's ``sentinel-1-grd``):
  calibrated with the item's ``calibration-<pol>`` LUT and geocoded through the
  ``annotation-<pol>`` geolocation grid (:mod:`tasks.s1_grd`), and its thermal noise removed
  when it has ``noise-<pol>`` assets (SAFE products, :mod:`tasks.s1_noise`). Without the
  calibration and annotation the item is refused, named: DN is never fed to the model.

Then, in linear power: the Lee filter; then dB. The result is VV, VH in dB, the model's S1 input
(see :mod:`tasks.sar` for what the model was trained on), with the :class:`~tasks.sar.S1Radiometry`
decision, which is logged and returned for the scene's records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from core.errors import RasterInputError
from tasks.grid import GridSpec
from tasks.preprocess import _read_failure, _warp, _warp_db_as_linear, open_raster
from tasks.s1_grd import (
    CalibrationLut,
    GeolocationGrid,
    calibrated_sigma0_on_grid,
    parse_annotation,
    parse_calibration,
    read_xml,
)
from tasks.s1_noise import NoiseLut, parse_noise
from tasks.sar import (
    S1_KINDS,
    S1Radiometry,
    decide_scale,
    declared_nodata,
    declared_radiometry,
    lee_filter,
    sigma0_to_db,
)
from tasks.sources import Acquisition

__all__ = ["POLARISATIONS", "S1Observation", "S1Source", "open_s1_acquisition", "read_s1_acquisition"]

log = logging.getLogger(__name__)

POLARISATIONS = ("vv", "vh")
"""Canonical asset keys of the two bands, in stack order."""


@dataclass(frozen=True, eq=False)
class S1Observation:
    """An S1 acquisition on the scene grid.

    Attributes:
        backscatter: float32 ``(2, H, W)``: VV, VH in dB, NaN nodata.
        radiometry: What the assets held and how they were read.
    """

    backscatter: NDArray[np.float32]
    radiometry: S1Radiometry


def _where(acq: Acquisition, pol: str) -> str:
    return f"S1 item {acq.product_id!r} ({acq.kind}) asset {pol!r}"


def _grd_is_dn(metadata: dict[str, str]) -> bool:
    """A GRD asset is ESA's DN unless its metadata declares calibrated σ⁰ (a linear or dB scale)."""
    for pol in POLARISATIONS:
        quantity, scale, _ = declared_radiometry(metadata, pol)
        if scale in ("linear", "db") or (quantity == "sigma0" and scale is None):
            return False
    return True


@dataclass(frozen=True, eq=False)
class S1Source:
    """An S1 acquisition whose radiometry is decided: reads VV and VH onto any grid (a strip too).

    Attributes:
        acq: The acquisition.
        radiometry: What the assets hold and how they are read (decided once, see :func:`open_s1_acquisition`).
    """

    acq: Acquisition
    radiometry: S1Radiometry
    _luts: tuple[tuple[CalibrationLut, GeolocationGrid, NoiseLut | None], ...] | None = None

    def linear(self, grid: GridSpec) -> list[NDArray[np.float32]]:
        """VV and VH as linear power on ``grid``, float32 ``(H, W)`` each, NaN nodata (no speckle filter).

        Raises:
            NoPixelOnGrid: a band has no valid pixel on ``grid`` (for a strip: it lies outside the data).
        """
        metadata = dict(self.acq.metadata)
        if self._luts is not None:
            return [
                _grd_sigma0(self.acq, pol, lut, geo, noise, grid)
                for pol, (lut, geo, noise) in zip(POLARISATIONS, self._luts, strict=True)
            ]
        if self.radiometry.scale == "db":  # resampled in linear power, not in dB
            return [_warp_db_as_linear(self.acq.asset(p), grid, declared_nodata(metadata, p)) for p in POLARISATIONS]
        return [_warp(self.acq.asset(p), grid, src_nodata=declared_nodata(metadata, p)) for p in POLARISATIONS]


def open_s1_acquisition(acq: Acquisition, sample_grid: GridSpec) -> S1Source:
    """Decides how one S1 acquisition is read (see the module doc); the values tested are on ``sample_grid``.

    ``sample_grid``: the scene grid, or a coarser grid over the same bounds (a bounded sample of
    a large scene: the scale test reads medians and shares of negative values, which a
    decimated read keeps). GRD DN reads no values to decide: its LUT and geolocation XML are
    parsed here, once.

    Raises:
        RasterInputError: as :func:`read_s1_acquisition`.
    """
    if acq.kind not in S1_KINDS:
        raise RasterInputError(f"item {acq.product_id!r}: kind {acq.kind} is not Sentinel-1 ({', '.join(S1_KINDS)})")
    metadata = dict(acq.metadata)
    if acq.kind == "S1GRD" and _grd_is_dn(metadata):
        _require_calibration(acq)  # before any read: DN without its LUT is refused outright
        luts = tuple(_grd_luts(acq, pol) for pol in POLARISATIONS)
        denoised = all(noise is not None for _, _, noise in luts)
        radiometry = S1Radiometry(
            "S1GRD",
            "sigma0",
            "dn",
            f"S1 item {acq.product_id!r} (S1GRD): DN calibrated to σ⁰ with its sigmaNought LUT and geocoded "
            "through its geolocation grid ("
            + ("thermal noise removed with its noise XML" if denoised else "no thermal-noise removal")
            + ", no terrain correction)",
        )
        return S1Source(acq, radiometry, luts)
    raw = [_warp(acq.asset(pol), sample_grid, src_nodata=declared_nodata(metadata, pol)) for pol in POLARISATIONS]
    decisions = [
        decide_scale(_where(acq, pol), acq.kind, metadata, pol, band)
        for pol, band in zip(POLARISATIONS, raw, strict=True)
    ]
    reasons = "; ".join(d.reason for d in decisions)
    if len({d.scale for d in decisions}) != 1:
        raise RasterInputError(f"S1 item {acq.product_id!r}: VV and VH read on different scales ({reasons})")
    return S1Source(acq, S1Radiometry(acq.kind, decisions[0].quantity, decisions[0].scale, reasons))


def read_s1_acquisition(acq: Acquisition, grid: GridSpec, *, speckle_size: int = 5) -> S1Observation:
    """Reads VV and VH of one S1 acquisition onto ``grid`` as backscatter in dB (see the module doc).

    The whole grid at once; :func:`tasks.prepare.prepare_stack` reads by strips through
    :func:`open_s1_acquisition` instead.

    Args:
        acq: An ``S1RTC`` or ``S1GRD`` acquisition with ``vv`` and ``vh`` assets (GRD DN also
            ``calibration-<pol>`` and ``annotation-<pol>``).
        grid: Target grid.
        speckle_size: Lee window in pixels; 1 disables the filter.

    Raises:
        RasterInputError: not an S1 kind; a GRD DN item without its calibration/annotation; a
            scale contradiction or undecidable scale; VV and VH read on different scales; any
            unusable raster or XML (named). OSError: a remote read failed.
    """
    source = open_s1_acquisition(acq, grid)
    log.info("%s", source.radiometry.reason)
    linear = source.linear(grid)
    bands = [sigma0_to_db(lee_filter(b, speckle_size) if speckle_size > 1 else b) for b in linear]
    return S1Observation(np.stack(bands), source.radiometry)


def _require_calibration(acq: Acquisition) -> None:
    assets = acq.asset_map
    for pol in POLARISATIONS:
        missing = [k for k in (f"calibration-{pol}", f"annotation-{pol}") if k not in assets]
        if missing:
            raise RasterInputError(
                f"{_where(acq, pol)}: uncalibrated GRD DN and the item has no {' or '.join(missing)} asset "
                "(the product's calibration / annotation XML); refused, DN is never fed to the model"
            )


def _grd_luts(acq: Acquisition, pol: str) -> tuple[CalibrationLut, GeolocationGrid, NoiseLut | None]:
    """The σ⁰ LUT, geolocation grid and noise LUT of one GRD DN polarisation, each checked to be its.

    The noise LUT is None when the item has no ``noise-<pol>`` asset (STAC GRD items).
    """
    assets = acq.asset_map
    cal_href, ann_href = assets[f"calibration-{pol}"], assets[f"annotation-{pol}"]
    lut = parse_calibration(read_xml(cal_href), cal_href)
    geo = parse_annotation(read_xml(ann_href), ann_href)
    for what, found in (("calibration", lut.polarisation), ("annotation", geo.polarisation)):
        if found and found != pol.upper():
            raise RasterInputError(f"{_where(acq, pol)}: its {what} XML is for {found}, not {pol.upper()}")
    noise_href = assets.get(f"noise-{pol}")  # SAFE products carry it (tasks.safe_s1)
    noise = parse_noise(read_xml(noise_href), noise_href) if noise_href is not None else None
    if noise is not None and noise.polarisation and noise.polarisation != pol.upper():
        raise RasterInputError(f"{_where(acq, pol)}: its noise XML is for {noise.polarisation}, not {pol.upper()}")
    return lut, geo, noise


def _grd_sigma0(
    acq: Acquisition, pol: str, lut: CalibrationLut, geo: GeolocationGrid, noise: NoiseLut | None, grid: GridSpec
) -> NDArray[np.float32]:
    """Linear σ⁰ of one GRD DN polarisation on the grid, from its LUT and geolocation grid.

    Thermal noise is removed first when its noise LUT is given.
    """
    from rasterio._err import CPLE_BaseError  # GDAL's own errors: no public alias in rasterio.errors
    from rasterio.errors import RasterioError

    href = acq.asset(pol)
    with open_raster(href) as ds:
        try:
            return calibrated_sigma0_on_grid(
                ds, lut, geo, grid, _where(acq, pol), noise.noise_at if noise is not None else None
            )
        except (RasterioError, CPLE_BaseError) as exc:  # GDAL's errors of a read or warp name no file
            raise _read_failure(href, exc) from None
