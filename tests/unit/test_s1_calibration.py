"""The real GRD calibration and annotation XML: σ⁰ LUT parsing and interpolation, geolocation GCPs.

Product: S1A IW GRDH 1SDV 2021-08-09 (south-central France), 26144 samples × 16676 lines; its
SAFE metadata is in the real-data folder (``s1_safe_metadata``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from core.errors import RasterInputError
from tasks.grid import GridSpec
from tasks.s1_grd import parse_annotation, parse_calibration, read_xml

PRODUCT = "S1A_IW_GRDH_1SDV_20210809T173953_20210809T174018_039156_049F13_6FF8.SAFE"
STEM = "s1a-iw-grd-{pol}-20210809t173953-20210809t174018-039156-049f13-{n}.xml"


def _files(realdata: Path, pol: str) -> tuple[Path, Path]:
    safe = realdata / "s1_safe_metadata" / PRODUCT / "annotation"
    name = STEM.format(pol=pol, n="001" if pol == "vv" else "002")
    return safe / "calibration" / f"calibration-{name}", safe / name


@pytest.fixture
def vv(realdata: Path) -> tuple[Path, Path]:
    return _files(realdata, "vv")


def test_lut_parses_all_vectors_and_interpolates_to_the_xml_values_at_vector_points(vv: tuple[Path, Path]) -> None:
    """At every (vector line, vector pixel) the interpolated A_σ is the XML's sigmaNought value.

    Expected values are read here with a separate, plain parse of the same file, and three are
    spelled out from the file's text, so a parser that shifted or mixed vectors would fail.
    """
    cal_path, _ = vv
    lut = parse_calibration(read_xml(str(cal_path)), str(cal_path))
    assert lut.polarisation == "VV"
    assert len(lut.lines) == 27 and all(len(p) == 655 for p in lut.pixels)
    assert lut.lines[:3].tolist() == [0, 667, 1334] and lut.lines[-1] == 17343  # last vector past the last line
    vectors = ET.parse(cal_path).getroot().findall("calibrationVectorList/calibrationVector")
    for k in (0, 1, 13, 26):
        line = float(vectors[k].findtext("line") or "nan")
        pixels = np.array((vectors[k].findtext("pixel") or "").split(), dtype=float)
        expected = np.array((vectors[k].findtext("sigmaNought") or "").split(), dtype=float)
        got = lut.sigma_at(np.array([line]), pixels)[0]
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    first = lut.sigma_at(np.array([0]), np.array([0, 40, 80, 26143]))[0]
    np.testing.assert_allclose(first, [662.8682, 662.5948, 662.3219, 557.7147], rtol=1e-7)


def test_lut_interpolation_between_vectors_is_bilinear(vv: tuple[Path, Path]) -> None:
    """Half-way between two vectors and two samples, A_σ is the mean of the four corner values."""
    cal_path, _ = vv
    lut = parse_calibration(read_xml(str(cal_path)), str(cal_path))
    corners = lut.sigma_at(np.array([667.0, 1334.0]), np.array([4000.0, 4040.0]))
    middle = lut.sigma_at(np.array([1000.5]), np.array([4020.0]))[0, 0]
    assert middle == pytest.approx(corners.mean(), rel=1e-12)
    # Past the last line the last vector holds (no extrapolation to nonsense).
    np.testing.assert_allclose(lut.sigma_at(np.array([20000.0]), lut.pixels[-1])[0], lut.sigma[-1])


def test_geolocation_grid_gives_210_gcps_with_the_products_corners(vv: tuple[Path, Path], realdata: Path) -> None:
    """210 GCPs (10 lines × 21 samples); the corner points match the manifest's footprint.

    The manifest (``gml:coordinates``, lat,lon) is an independent statement of the corners.
    """
    _, ann_path = vv
    geo = parse_annotation(read_xml(str(ann_path)), str(ann_path))
    assert geo.shape == (16676, 26144) and geo.polarisation == "VV"
    gcps = geo.gcps()
    assert len(gcps) == 210
    assert len(np.unique(geo.lines)) == 10 and len(np.unique(geo.pixels)) == 21
    by_index = {(g.row - 0.5, g.col - 0.5): (g.y, g.x) for g in gcps}  # GDAL corner-based → ESA centres
    assert by_index[(0, 0)] == pytest.approx((44.53525246605311, 1.929931301635841))
    assert by_index[(16675, 26143)] == pytest.approx((46.43620997314449, 4.848187928056817))
    manifest = (realdata / "s1_safe_metadata" / PRODUCT / "manifest.safe").read_text()
    match = re.search(r"<gml:coordinates>([^<]+)</gml:coordinates>", manifest)
    assert match is not None
    footprint = [tuple(map(float, p.split(","))) for p in match.group(1).split()]
    corners = [by_index[(line, pixel)] for line in (0, 16675) for pixel in (0, 26143)]
    for corner in corners:  # each geolocation-grid corner is one of the footprint's corners (≤ 0.01°)
        assert min(np.hypot(corner[0] - f[0], corner[1] - f[1]) for f in footprint) < 0.01


def test_window_over_a_grid_covers_the_geolocation_point_inside_it(vv: tuple[Path, Path]) -> None:
    """A 2 km grid around one geolocation point reads a radar window of a few hundred pixels holding it."""
    from pyproj import Transformer

    _, ann_path = vv
    geo = parse_annotation(read_xml(str(ann_path)), str(ann_path))
    k = int(np.flatnonzero((geo.lines == 8008) & (geo.pixels == 13080))[0])
    x, y = Transformer.from_crs(4326, 32631, always_xy=True).transform(geo.lon[k], geo.lat[k])
    grid = GridSpec(32631, (10.0, 0.0, x - 1000.0, 0.0, -10.0, y + 1000.0), 200, 200)
    r0, c0, h, w = geo.window_over(grid, "test")
    assert r0 <= 8008 < r0 + h and c0 <= 13080 < c0 + w
    # 2 km at 10 m is 200 px; the window is that, rotated (ascending pass), plus its margins.
    assert h < 500 and w < 500
    far = GridSpec(32631, (10.0, 0.0, x + 500_000.0, 0.0, -10.0, y), 200, 200)
    with pytest.raises(RasterInputError, match="does not reach the scene grid"):
        geo.window_over(far, "test")


def test_wrong_or_broken_xml_is_refused_naming_the_file(vv: tuple[Path, Path], tmp_path: Path) -> None:
    """An annotation given as calibration, or a truncated file, is bad input named by its path."""
    _, ann_path = vv
    with pytest.raises(RasterInputError, match=r"expected a Sentinel-1 <calibration> document"):
        parse_calibration(read_xml(str(ann_path)), str(ann_path))
    broken = tmp_path / "calibration-broken.xml"
    broken.write_bytes(read_xml(str(vv[0]))[:5000])
    with pytest.raises(RasterInputError, match=r"calibration-broken\.xml: not XML"):
        parse_calibration(read_xml(str(broken)), str(broken))
    with pytest.raises(RasterInputError, match=r"missing\.xml: unreadable metadata XML"):
        read_xml(str(tmp_path / "missing.xml"))


def test_real_lut_and_geolocation_grid_end_to_end(vv: tuple[Path, Path], realdata: Path, tmp_path: Path) -> None:
    """DN written at the product's full size (a sparse file) read with the real XML: σ⁰ and place right.

    DN = round(√σ⁰ · A_σ) with the real LUT: −13 dB everywhere and a 0 dB block of 7 × 7 radar
    pixels centred on geolocation point (line 8008, sample 13080). On a 2 km UTM grid around
    that point, the background must read −13 dB (±0.05 dB: DN rounding ≤ 0.03 dB at ~135 DN)
    and the block's power-weighted centre must sit on the point's map position (≤ 5 m; measured
    0.08 m with the thin-plate spline; GDAL's default GCP polynomial puts it ~330 m off here).
    """
    import warnings

    import rasterio
    from pyproj import Transformer
    from rasterio.crs import CRS
    from rasterio.windows import Window

    from tasks.s1_read import read_s1_acquisition
    from tasks.sources import Acquisition

    geo = {}
    assets: list[tuple[str, str]] = []
    for pol in ("vv", "vh"):
        cal_path, ann_path = _files(realdata, pol)
        lut = parse_calibration(read_xml(str(cal_path)), str(cal_path))
        geo[pol] = parse_annotation(read_xml(str(ann_path)), str(ann_path))
        k = int(np.flatnonzero((geo[pol].lines == 8008) & (geo[pol].pixels == 13080))[0])
        x, y = Transformer.from_crs(4326, 32631, always_xy=True).transform(geo[pol].lon[k], geo[pol].lat[k])
        grid = GridSpec(32631, (10.0, 0.0, round(x) - 1000.0, 0.0, -10.0, round(y) + 1000.0), 200, 200)
        r0, c0, h, w = geo[pol].window_over(grid, "test")
        rows, cols = np.arange(r0, r0 + h), np.arange(c0, c0 + w)
        sigma0 = np.full((h, w), 10**-1.3)
        sigma0[8008 - 3 - r0 : 8008 + 4 - r0, 13080 - 3 - c0 : 13080 + 4 - c0] = 1.0
        dn = np.round(np.sqrt(sigma0) * lut.sigma_at(rows, cols)).astype(np.uint16)
        path = tmp_path / f"{pol}.tiff"
        lines, samples = geo[pol].shape
        profile = {"driver": "GTiff", "width": samples, "height": lines, "count": 1, "dtype": "uint16"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path, "w", tiled=True, SPARSE_OK=True, **profile) as dst:
                dst.write(dn, 1, window=Window(c0, r0, w, h))
                dst.gcps = (geo[pol].gcps(), CRS.from_epsg(4326))
        assets += [(pol, str(path)), (f"calibration-{pol}", str(cal_path)), (f"annotation-{pol}", str(ann_path))]
    when = datetime(2021, 8, 9, 17, 40, tzinfo=UTC)
    acq = Acquisition(PRODUCT, "S1GRD", "sentinel-1a", when, None, tuple(assets), "local:test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        obs = read_s1_acquisition(acq, grid, speckle_size=1)
    vv_db = obs.backscatter[0]
    background = np.nanmedian(vv_db)
    assert background == pytest.approx(-13.0, abs=0.05)
    gy, gx = np.mgrid[0:200, 0:200]
    iy, ix = np.unravel_index(np.nanargmax(vv_db), vv_db.shape)
    near = (np.abs(gy - iy) <= 8) & (np.abs(gx - ix) <= 8)  # the block, spread by resampling
    assert np.nanmax(np.abs(vv_db[~near] + 13.0)) < 0.05
    power = np.where(near, np.clip(10 ** (vv_db / 10) - 10**-1.3, 0, None), 0.0)
    cx = grid.transform[2] + 10.0 * (np.sum(power * (gx + 0.5)) / power.sum())
    cy = grid.transform[5] - 10.0 * (np.sum(power * (gy + 0.5)) / power.sum())
    assert np.hypot(cx - x, cy - y) < 5.0, (cx - x, cy - y)
