"""GRD DN in radar geometry → σ⁰ in dB on the UTM grid, against a known synthetic σ⁰ field.

The synthetic product is generated consistently, like ESA's: a ground-range image whose lines run
south to north (ascending pass) and samples west to east, rotated 10°; a geolocation grid of
5 × 5 points (pixel-centre indices → lat/lon); a σ⁰ LUT; uint16 DN = round(√σ⁰ · A_σ). The σ⁰
field is a plane in dB (−25 … −5 dB across the grid, both axes), so a geocoding error shows as
a dB error (0.05 dB ≈ 1 m here), and calibration errors show directly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pyproj import Transformer
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.transform import from_origin

from core.errors import RasterInputError
from tasks.grid import GridSpec
from tasks.s1_read import read_s1_acquisition
from tasks.sources import Acquisition, item_to_acquisition

EPSG = 32631
X0, Y0 = 600_000.0, 5_000_000.0
GRID = GridSpec(EPSG, (10.0, 0.0, X0, 0.0, -10.0, Y0), 40, 40)
LINES = SAMPLES = 80
MESH = [0, 20, 40, 60, 79]
ANGLE = np.deg2rad(10.0)
CENTRE = (X0 + 200.0, Y0 - 200.0)


def sigma0_db(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The known field: −15 dB at the grid's centre, +10 dB per 400 m east and per 400 m north."""
    return -15.0 + 10.0 * (x - CENTRE[0]) / 400.0 + 10.0 * (y - CENTRE[1]) / 400.0


def ground(line: np.ndarray, pixel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map position (UTM, m) of a radar pixel centre: 10 m spacing, lines northward, rotated 10°."""
    u = (np.asarray(pixel, dtype=float) - (SAMPLES - 1) / 2) * 10.0  # across track (east-ish)
    v = (np.asarray(line, dtype=float) - (LINES - 1) / 2) * 10.0  # along track (north-ish)
    return (
        CENTRE[0] + u * np.cos(ANGLE) - v * np.sin(ANGLE),
        CENTRE[1] + u * np.sin(ANGLE) + v * np.cos(ANGLE),
    )


def lut_value(line: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    """A_σ, bilinear in (line, pixel), so the LUT's bilinear interpolation reproduces it exactly."""
    return 6000.0 + 10.0 * pixel + 6.0 * line + 0.1 * line * pixel


def _annotation(pol: str) -> str:
    to_ll = Transformer.from_crs(EPSG, 4326, always_xy=True)
    points = []
    for line in MESH:
        for pixel in MESH:
            lon, lat = to_ll.transform(*ground(np.array(line), np.array(pixel)))
            points.append(
                f"<geolocationGridPoint><line>{line}</line><pixel>{pixel}</pixel><latitude>{lat!r}</latitude>"
                f"<longitude>{lon!r}</longitude><height>1800.0</height></geolocationGridPoint>"
            )
    return (
        f"<product><adsHeader><polarisation>{pol.upper()}</polarisation></adsHeader><imageAnnotation>"
        f"<imageInformation><numberOfSamples>{SAMPLES}</numberOfSamples><numberOfLines>{LINES}</numberOfLines>"
        f"</imageInformation></imageAnnotation><geolocationGrid><geolocationGridPointList count='{len(points)}'>"
        + "".join(points)
        + "</geolocationGridPointList></geolocationGrid></product>"
    )


def _calibration(pol: str) -> str:
    pixels = np.array([0, 20, 40, 60, 79])
    vectors = []
    for line in (0, 20, 40, 60, 80):  # the last vector lies past the last line, as in real products
        values = " ".join(f"{v:.6e}" for v in lut_value(np.full(5, line), pixels))
        vectors.append(
            f"<calibrationVector><line>{line}</line><pixel count='5'>{' '.join(map(str, pixels))}</pixel>"
            f"<sigmaNought count='5'>{values}</sigmaNought></calibrationVector>"
        )
    return (
        f"<calibration><adsHeader><polarisation>{pol.upper()}</polarisation></adsHeader>"
        f"<calibrationVectorList count='5'>{''.join(vectors)}</calibrationVectorList></calibration>"
    )


def _measurement(path: Path, offset_db: float) -> None:
    lines, pixels = np.mgrid[0:LINES, 0:SAMPLES].astype(float)
    sigma0 = 10.0 ** (sigma0_db(*ground(lines, pixels)) / 10.0 + offset_db / 10.0)
    dn = np.round(np.sqrt(sigma0) * lut_value(lines, pixels)).astype(np.uint16)
    to_ll = Transformer.from_crs(EPSG, 4326, always_xy=True)
    gcps = [
        GroundControlPoint(row=r + 0.5, col=c + 0.5, x=lon, y=lat)
        for r in MESH
        for c in MESH
        for lon, lat in [to_ll.transform(*ground(np.array(r), np.array(c)))]
    ]
    profile = {"driver": "GTiff", "width": SAMPLES, "height": LINES, "count": 1, "dtype": "uint16"}
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning), rasterio.open(path, "w", **profile) as dst:
        dst.write(dn, 1)
        dst.gcps = (gcps, CRS.from_epsg(4326))


def _grd_item(root: Path, *, with_lut: bool = True, item_id: str = "S1A_IW_GRDH_1SDV_SYNTH") -> pystac.Item:
    """A Planetary Computer-like ``sentinel-1-grd`` item: vv/vh DN, schema-* XML assets."""
    item = pystac.Item(item_id, None, None, datetime(2024, 8, 1, 17, 40, tzinfo=UTC), {"sar:product_type": "GRD"})
    for pol, offset in (("vv", 0.0), ("vh", -7.0)):
        _measurement(root / f"iw-{pol}.tiff", offset)
        desc = f"Amplitude of signal transmitted with vertical polarization ({pol.upper()})"
        item.add_asset(pol, pystac.Asset(str(root / f"iw-{pol}.tiff"), title=f"{pol.upper()}", description=desc))
        if with_lut:
            (root / f"calibration-iw-{pol}.xml").write_text(_calibration(pol))
            (root / f"iw-{pol}.xml").write_text(_annotation(pol))
            item.add_asset(f"schema-calibration-{pol}", pystac.Asset(str(root / f"calibration-iw-{pol}.xml")))
            item.add_asset(f"schema-product-{pol}", pystac.Asset(str(root / f"iw-{pol}.xml")))
    return item


def _expected_db() -> np.ndarray:
    rows, cols = np.mgrid[0 : GRID.height, 0 : GRID.width]
    return sigma0_db(X0 + (cols + 0.5) * 10.0, Y0 - (rows + 0.5) * 10.0)


def test_grd_dn_in_radar_geometry_becomes_sigma0_db_on_the_utm_grid(tmp_path: Path) -> None:
    """Calibrated with the LUT, geocoded through the geolocation grid: the known σ⁰ within 0.06 dB.

    Error budget (measured: max 0.042 / 0.046 dB, mean +0.003 dB for VV / VH): GDAL's approximate
    transformer (≤ 0.125 px = 1.25 m, ≤ 0.044 dB along this field's 0.035 dB/m gradient), uint16
    DN rounding (≤ 0.5 of ≥ 150 DN: ≤ 0.03 dB at −32 dB), bilinear resampling of a field that is
    a plane in dB, not in power (< 0.01 dB). The mean bounds a systematic shift: a half-pixel
    GCP convention error reads −0.24 dB here.
    """
    acq = item_to_acquisition(_grd_item(tmp_path), "S1GRD", "local:test")
    assert {"calibration-vv", "annotation-vh"} <= set(acq.asset_map)
    obs = read_s1_acquisition(acq, GRID, speckle_size=1)
    assert obs.backscatter.shape == (2, 40, 40) and obs.backscatter.dtype == np.float32
    assert (obs.radiometry.kind, obs.radiometry.quantity, obs.radiometry.scale) == ("S1GRD", "sigma0", "dn")
    expected = _expected_db()
    vv_err = np.abs(obs.backscatter[0] - expected)
    vh_err = np.abs(obs.backscatter[1] - (expected - 7.0))
    assert np.isfinite(obs.backscatter).all(), "the radar image covers the whole grid"
    assert vv_err.max() < 0.06 and vh_err.max() < 0.06, (vv_err.max(), vh_err.max())
    assert abs(float(np.mean(obs.backscatter[0] - expected))) < 0.01, "no systematic geolocation shift"
    # The image is stored south-up: its first lines must have landed in the grid's south.
    assert obs.backscatter[0, -1, 20] < obs.backscatter[0, 0, 20] - 8.0


def test_grd_dn_is_never_read_as_sigma0_without_its_lut(tmp_path: Path) -> None:
    """A GRD item with DN but no calibration/annotation XML is refused with the item named."""
    acq = item_to_acquisition(_grd_item(tmp_path, with_lut=False, item_id="S1B_GRD_NO_LUT"), "S1GRD", "local:test")
    with pytest.raises(RasterInputError) as err:
        read_s1_acquisition(acq, GRID)
    message = str(err.value)
    assert "S1B_GRD_NO_LUT" in message and "calibration-vv" in message and "uncalibrated GRD DN" in message
    assert "\n" not in message


def test_grd_with_its_own_geotransform_of_another_size_than_the_lut_is_refused(tmp_path: Path) -> None:
    """A geocoded DN raster whose size is not the LUT's image cannot be calibrated: refused."""
    item = _grd_item(tmp_path)
    geocoded = tmp_path / "geocoded-vv.tif"
    profile = {
        "driver": "GTiff",
        "width": 50,
        "height": 50,
        "count": 1,
        "dtype": "uint16",
        "crs": f"EPSG:{EPSG}",
        "transform": from_origin(X0, Y0, 10.0, 10.0),
    }
    with rasterio.open(geocoded, "w", **profile) as dst:
        dst.write(np.full((1, 50, 50), 300, dtype=np.uint16))
    item.assets["vv"].href = str(geocoded)
    acq = item_to_acquisition(item, "S1GRD", "local:test")
    with pytest.raises(RasterInputError, match=r"raster is 50 × 50 but its calibration/annotation describe 80 × 80"):
        read_s1_acquisition(acq, GRID)


def test_grd_geocoded_at_the_luts_size_is_calibrated_with_it(tmp_path: Path) -> None:
    """A DN raster with a geotransform and the LUT's size: σ⁰ = DN² / A_σ² at each (row, col)."""
    item = _grd_item(tmp_path)
    rows, cols = np.mgrid[0:LINES, 0:SAMPLES].astype(float)
    dn = np.round(np.sqrt(0.01) * lut_value(rows, cols)).astype(np.uint16)  # −20 dB everywhere
    geocoded = tmp_path / "geocoded-vv.tif"
    profile = {
        "driver": "GTiff",
        "width": SAMPLES,
        "height": LINES,
        "count": 1,
        "dtype": "uint16",
        "crs": f"EPSG:{EPSG}",
        "transform": from_origin(X0 - 200.0, Y0 + 200.0, 10.0, 10.0),
    }
    with rasterio.open(geocoded, "w", **profile) as dst:
        dst.write(dn, 1)
    item.assets["vv"].href = str(geocoded)
    obs = read_s1_acquisition(item_to_acquisition(item, "S1GRD", "local:test"), GRID, speckle_size=1)
    np.testing.assert_allclose(obs.backscatter[0], -20.0, atol=0.02)


def test_acquisition_of_another_kind_is_refused() -> None:
    """Only S1 kinds are read as backscatter."""
    acq = Acquisition("DEM-1", "DEM", "x", datetime(2024, 1, 1, tzinfo=UTC), None, (("data", "/x.tif"),), "local:t")
    with pytest.raises(RasterInputError, match="kind DEM is not Sentinel-1"):
        read_s1_acquisition(acq, GRID)


def test_calibration_xml_over_http_and_a_missing_one(tmp_path: Path) -> None:
    """The LUT and annotation fetched from a real loopback HTTP server read the same; a 404 is OSError.

    A failed remote read is an environment failure (retryable), not bad input: OSError, named.
    """
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    item = _grd_item(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        for key, asset in item.assets.items():
            if key.startswith("schema-"):
                asset.href = f"{base}/{Path(asset.href).name}"
        remote = read_s1_acquisition(item_to_acquisition(item, "S1GRD", "stac:test"), GRID, speckle_size=1)
        local = read_s1_acquisition(
            item_to_acquisition(_grd_item(tmp_path), "S1GRD", "local:test"), GRID, speckle_size=1
        )
        np.testing.assert_array_equal(remote.backscatter, local.backscatter)
        item.assets["schema-calibration-vv"].href = f"{base}/no-such-calibration.xml"
        with pytest.raises(OSError, match=r"no-such-calibration\.xml: remote read failed \(404") as err:
            read_s1_acquisition(item_to_acquisition(item, "S1GRD", "stac:test"), GRID)
        assert not isinstance(err.value, RasterInputError)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(2)
