"""Preprocessing onto the 10 m scene grid: S2 harmonisation and resampling, S1, DEM, slope."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

from tasks.grid import GridSpec, grid_for_geometry, utm_epsg_for
from tasks.preprocess import (
    CLOUD_SCL_CLASSES,
    S2_BANDS,
    detect_s2_dn_offset,
    harmonise_s2_dn,
    lee_filter,
    read_dem,
    read_s1,
    read_s2,
    sigma0_to_db,
    slope_degrees,
)

EPSG = 32643
X0, Y0 = 600_000.0, 4_800_000.0
GRID = GridSpec(EPSG, (10.0, 0.0, X0, 0.0, -10.0, Y0), 32, 32)
RES_OF = dict.fromkeys(("B02", "B03", "B04", "B08"), 10) | dict.fromkeys(("B01", "B09"), 60)


def from_origin(west: float, north: float, xsize: float, ysize: float) -> Affine:
    """North-up transform (rasterio's helper, without its pending-deprecation warning)."""
    return Affine(xsize, 0.0, west, 0.0, -ysize, north)


def _write(path: Path, data: np.ndarray, transform, crs="EPSG:32643", nodata=None) -> str:
    data = data if data.ndim == 3 else data[np.newaxis]
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return str(path)


# --- harmonisation ---------------------------------------------------------------------------


def test_baselines_give_the_same_reflectance():
    """The same surface seen before and after baseline 04.00 (DN + 1000) harmonises identically."""
    refl = np.array([[1, 250, 5000], [9000, 0, 12]], dtype=np.uint16)
    old = refl.copy()  # DN 0 is nodata in both eras
    new = np.where(refl == 0, 0, refl + 1000).astype(np.uint16)
    a = harmonise_s2_dn(old, "02.14")
    b = harmonise_s2_dn(new, "05.09")
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.isnan(a[1, 1]) and np.isnan(b[1, 1])
    assert a[0, 1] == 250.0


@pytest.mark.parametrize("baseline", ["04.00", "N0400", "4.0", "05.10", " n0511 "])
def test_offset_applies_from_04_00(baseline):
    """The offset is removed from baseline 04.00 on, whatever the spelling of the baseline."""
    assert harmonise_s2_dn(np.array([1500], np.uint16), baseline)[0] == 500.0


def test_dark_pixels_clip_to_zero_not_nodata():
    """DN between 1 and 999 under the new baseline is a (negative) reflectance, not nodata."""
    out = harmonise_s2_dn(np.array([0, 400, 1000], np.uint16), "05.09")
    assert np.isnan(out[0])
    np.testing.assert_array_equal(out[1:], [0.0, 0.0])


def test_bad_baseline_is_rejected():
    """An unreadable baseline raises instead of silently skipping the harmonisation."""
    with pytest.raises(ValueError, match="baseline"):
        harmonise_s2_dn(np.array([1], np.uint16), "latest")


# --- S2 reading ------------------------------------------------------------------------------


def _s2_files(tmp_path: Path, *, offset: int = 1000) -> tuple[dict[str, str], str]:
    hrefs = {}
    for band in S2_BANDS:
        res = RES_OF.get(band, 20)
        n = -(-320 // res)  # cover the 320 m grid
        dn = np.full((n, n), 2000 + offset, dtype=np.uint16)
        if band == "B11":  # a bright 4 × 4 block of 20 m pixels: rows 4–7, cols 8–11
            dn[4:8, 8:12] = 6000 + offset
        if band == "B01":  # one bright 60 m pixel at row 2, col 3
            dn[2, 3] = 4000 + offset
        if band == "B03":  # nodata strip along the left edge (2 columns of 10 m)
            dn[:, :2] = 0
        hrefs[band] = _write(tmp_path / f"{band}.tif", dn, from_origin(X0, Y0, res, res), nodata=0)
    scl = np.full((16, 16), 4, dtype=np.uint8)
    scl[0:4, 12:16] = 9  # cloud: 10 m rows 0–7, cols 24–31
    scl[12:16, 12:16] = 11  # snow: must stay clear
    scl_href = _write(tmp_path / "SCL.tif", scl, from_origin(X0, Y0, 20, 20), nodata=0)
    return hrefs, scl_href


def test_bands_land_on_the_10m_grid_where_they_should(tmp_path):
    """20 m and 60 m bands land on the 10 m grid at the right place.

    Guards against half-pixel and scale shifts.
    """
    hrefs, scl = _s2_files(tmp_path)
    scene = read_s2(hrefs, scl, "05.09", GRID)
    assert scene.reflectance.shape == (12, 32, 32) and scene.reflectance.dtype == np.float32
    b11 = scene.reflectance[S2_BANDS.index("B11")]
    # The block's interior (away from the bilinear ramp) keeps its value, background too.
    np.testing.assert_allclose(b11[10:14, 18:22], 6000.0)
    np.testing.assert_allclose(b11[24:, :8], 2000.0)
    # The brightness centroid is the block's centre: rows 8–15 → 11.5, cols 16–23 → 19.5.
    excess = np.nan_to_num(b11 - 2000.0)
    rows, cols = np.indices(excess.shape)
    assert excess.sum() > 0
    assert abs((excess * rows).sum() / excess.sum() - 11.5) < 0.05
    assert abs((excess * cols).sum() / excess.sum() - 19.5) < 0.05
    # 60 m pixel (2, 3) covers 10 m rows 12–17, cols 18–23: centre (14.5, 20.5).
    b01 = np.nan_to_num(scene.reflectance[0] - 2000.0)
    peak = np.unravel_index(np.argmax(b01), b01.shape)
    assert peak[0] in (14, 15) and peak[1] in (20, 21)
    assert abs((b01 * rows).sum() / b01.sum() - 14.5) < 0.1
    assert abs((b01 * cols).sum() / b01.sum() - 20.5) < 0.1


def test_nodata_and_clouds_are_not_clear(tmp_path):
    """Nodata stays NaN and not clear; SCL clouds are not clear, SCL snow is.

    The cloud fraction is of data pixels, not of the grid.
    """
    hrefs, scl = _s2_files(tmp_path)
    scene = read_s2(hrefs, scl, "05.09", GRID)
    b03 = scene.reflectance[S2_BANDS.index("B03")]
    assert np.isnan(b03[:, :2]).all(), "nodata must stay NaN, never 0"
    assert not scene.clear[:, :2].any()
    assert not scene.clear[0:8, 24:32].any(), "SCL 9 is cloud"
    assert scene.clear[24:32, 24:32].all(), "SCL 11 (snow) is never cloud"
    assert 11 not in CLOUD_SCL_CLASSES
    data_pixels = 32 * 30
    assert scene.cloud_fraction == pytest.approx(64 / data_pixels)


def test_without_scl_everything_with_data_is_clear(tmp_path):
    """Without SCL no pixel is masked as cloud, but the cloud state is unknown (NaN), never "clear".

    Pre-04.00 DN are used as they are.
    """
    hrefs, _ = _s2_files(tmp_path, offset=0)
    scene = read_s2(hrefs, None, "02.14", GRID)
    assert scene.clear[:, 2:].all() and not scene.clear[:, :2].any()
    assert np.isnan(scene.cloud_fraction) and scene.snow_ice is None
    np.testing.assert_allclose(scene.reflectance[S2_BANDS.index("B02")], 2000.0)


def test_missing_band_is_named(tmp_path):
    """A missing band raises with its name instead of producing a short stack."""
    hrefs, scl = _s2_files(tmp_path)
    del hrefs["B8A"]
    with pytest.raises(KeyError, match="B8A"):
        read_s2(hrefs, scl, "05.09", GRID)


# --- S1 --------------------------------------------------------------------------------------


def test_sigma0_to_db():
    """Linear → dB is 10·log10, with NaN for non-positive and missing power."""
    out = sigma0_to_db(np.array([1.0, 0.1, 0.0, -1.0, np.nan]))
    np.testing.assert_allclose(out[:2], [0.0, -10.0], atol=1e-6)
    assert np.isnan(out[2:]).all() and out.dtype == np.float32


def test_lee_filter_reduces_speckle_keeps_mean_and_nodata():
    """The Lee filter reduces speckle without bias and neither fills nor spreads nodata."""
    rng = np.random.default_rng(0)
    truth = 0.05
    speckled = truth * rng.gamma(4.4, 1 / 4.4, size=(64, 64))
    speckled[30, 30] = np.nan
    out = lee_filter(speckled, 5)
    assert np.isnan(out[30, 30]), "nodata is not filled"
    assert np.isfinite(np.delete(out.ravel(), 30 * 64 + 30)).all(), "NaN does not spread"
    inner = out[8:-8, 8:-8]
    assert np.nanstd(inner) < 0.6 * np.nanstd(speckled[8:-8, 8:-8])
    assert np.nanmean(inner) == pytest.approx(truth, rel=0.05)
    np.testing.assert_allclose(lee_filter(np.full((8, 8), 0.2), 5), 0.2, rtol=1e-6)


def test_read_s1_from_another_grid_in_linear_or_db(tmp_path):
    """S1 on a 20 m grid with a 5 m shift lands on the 10 m grid; dB and linear inputs agree."""
    lin = np.full((20, 20), 0.01, dtype=np.float32)  # −20 dB
    lin[:, 10:] = 0.1  # −10 dB on the east half (x ≥ X0 − 5 + 200)
    lin[0, 0] = np.nan
    t = from_origin(X0 - 5, Y0 + 5, 20, 20)
    vv = _write(tmp_path / "vv.tif", lin, t)
    vh = _write(tmp_path / "vh.tif", lin / 10, t)
    db = 10 * np.log10(lin)
    vv_db = _write(tmp_path / "vv_db.tif", db.astype(np.float32), t)
    vh_db = _write(tmp_path / "vh_db.tif", (db - 10).astype(np.float32), t)
    a = read_s1(vv, vh, GRID)
    b = read_s1(vv_db, vh_db, GRID, linear=False)
    assert a.shape == (2, 32, 32) and a.dtype == np.float32
    np.testing.assert_allclose(a[0, 16:, 2:14], -20.0, atol=0.01)
    np.testing.assert_allclose(a[0, 16:, 22:], -10.0, atol=0.01)
    np.testing.assert_allclose(a[1, 16:, 22:], -20.0, atol=0.01)
    assert np.isnan(a[0, 0, 0]), "source nodata stays NaN"
    np.testing.assert_allclose(a[:, 10:, 4:12], b[:, 10:, 4:12], atol=0.01)


def test_read_s1_geocodes_gcp_only_grd(tmp_path):
    """A GRD with only GCPs (no geotransform) is geocoded onto the grid through them.

    Its rows run south to north, so its first rows must land on the grid's southern rows.
    """
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS

    lin = np.full((40, 40), 0.01, dtype=np.float32)
    lin[:10] = 0.1  # first 10 rows, which the GCPs place in the south
    gcps = [
        GroundControlPoint(row=r, col=c, x=X0 - 40 + c * 10, y=Y0 - 360 + r * 10)
        for r in (0, 20, 40)
        for c in (0, 20, 40)
    ]
    path = tmp_path / "grd.tif"
    profile = {"driver": "GTiff", "width": 40, "height": 40, "count": 1, "dtype": "float32"}
    with (
        pytest.warns(rasterio.errors.NotGeoreferencedWarning),
        rasterio.open(path, "w", **profile) as dst,
    ):
        dst.write(lin, 1)
        dst.gcps = (gcps, CRS.from_epsg(EPSG))
    out = read_s1(str(path), str(path), GRID, speckle_size=1)
    # Source rows 0–9 span y = Y0 − 360 … Y0 − 260: grid rows 26–31.
    np.testing.assert_allclose(out[0, 26:], -10.0, atol=0.01)
    np.testing.assert_allclose(out[0, :26], -20.0, atol=0.01)


# --- DEM and slope ---------------------------------------------------------------------------


def test_dem_in_4326_keeps_its_values_on_a_utm_grid(tmp_path):
    """A plane z = f(lon, lat) warped bilinearly onto UTM equals the plane at pixel centres."""
    grid = GridSpec(EPSG, (10.0, 0.0, X0, 0.0, -10.0, Y0), 48, 40)
    to_ll = Transformer.from_crs(EPSG, 4326, always_xy=True)
    lon0, lat0 = to_ll.transform(X0 - 200, Y0 + 200)
    step = 1 / 3600  # GLO-30: 1 arc-second
    n = 40
    lons = lon0 + (np.arange(n) + 0.5) * step
    lats = lat0 - (np.arange(n) + 0.5) * step

    def plane(lon, lat):
        return 4000.0 + 20_000.0 * (lon - lon0) - 30_000.0 * (lat - lat0)

    z = plane(lons[np.newaxis, :], lats[:, np.newaxis]).astype(np.float32)
    z[15:, 15:] = -32767.0  # nodata patch over the grid's south-east
    href = _write(tmp_path / "dem.tif", z, from_origin(lon0, lat0, step, step), "EPSG:4326", -32767)
    dem = read_dem(href, grid)
    assert dem.dtype == np.float32 and dem.shape == (40, 48)
    for row, col in [(5, 5), (20, 10), (10, 30), (33, 7)]:
        x, y = grid.affine @ (col + 0.5, row + 0.5)
        assert dem[row, col] == pytest.approx(plane(*to_ll.transform(x, y)), abs=0.05)
    assert np.isnan(dem).any() and not (dem == -32767).any(), "nodata → NaN, never the tag"
    assert np.isfinite(dem[:20, :20]).all()


def test_slope_of_a_plane_and_a_hole():
    """Slope of a plane is exact, and a DEM hole does not erase its neighbours' slope."""
    _rows, cols = np.indices((16, 16))
    dem = (cols * 10.0 * 0.1).astype(np.float32)  # rises 0.1 m per m eastwards
    dem[8, 8] = np.nan
    s = slope_degrees(dem, 10.0)
    expected = np.degrees(np.arctan(0.1))
    assert np.isnan(s[8, 8])
    finite = np.isfinite(s)
    assert finite.sum() == 16 * 16 - 1, "a hole does not erase its neighbours' slope"
    np.testing.assert_allclose(s[finite], expected, rtol=1e-5)


def test_grid_for_geometry_snaps_to_resolution():
    """The scene grid is in the AOI's UTM zone, snapped to 10 m and covers the whole AOI."""
    from shapely.geometry import box

    aoi = box(77.01, 43.02, 77.06, 43.05)
    grid = grid_for_geometry(aoi)
    assert grid.epsg == utm_epsg_for(77.03, 43.03) == 32643
    left, bottom, right, top = grid.bounds
    assert all(v % 10 == 0 for v in (left, bottom, right, top))
    to_utm = Transformer.from_crs(4326, grid.epsg, always_xy=True)
    for lon, lat in aoi.exterior.coords:
        x, y = to_utm.transform(lon, lat)
        assert left <= x <= right and bottom <= y <= top
    assert grid.resolution == 10.0 and grid.shape == (grid.height, grid.width)
    assert utm_epsg_for(-70.5, -33.4) == 32719


# --- the +1000 DN offset test for one-off inputs of unknown baseline ------------------------------

TERRAMESH_S2 = ("terramesh_sample", "433D_629L_3_1_S2L2A.tif")


def _snow_chip(rng: np.random.Generator) -> np.ndarray:
    """Harmonised snow-covered ground: bright visible/NIR, dark SWIR (reflectance × 10 000)."""
    level = np.array([8000, 8300, 8200, 8000, 7800, 7400, 7200, 7000, 6600, 5000, 600, 450], float)
    return level[:, None, None] * rng.uniform(0.8, 1.1, (12, 64, 64))


def test_offset_detection_on_harmonised_and_offset_snow() -> None:
    """Snow is bright in the visible but dark in B11/B12: harmonised → 0, with the offset → 1000."""
    snow = _snow_chip(np.random.default_rng(1))
    assert detect_s2_dn_offset(snow)[0] == 0
    offset, reason = detect_s2_dn_offset(snow + 1000)
    assert offset == 1000 and "1000 removed" in reason


def test_offset_detection_ignores_nodata_and_needs_enough_pixels() -> None:
    snow = _snow_chip(np.random.default_rng(2)) + 1000
    snow[:, :40] = 0  # nodata (0) and NaN never count as dark pixels
    snow[:, 40:50] = np.nan
    assert detect_s2_dn_offset(snow)[0] == 1000
    few = np.full((12, 5, 5), 3000.0)
    offset, reason = detect_s2_dn_offset(few)
    assert offset == 0 and "too few" in reason


def test_offset_detection_on_the_real_terramesh_chip(realdata: Path) -> None:
    """The real L2A chip carries the offset (every band starts near 1000); harmonised it does not."""
    with rasterio.open(realdata.joinpath(*TERRAMESH_S2)) as ds:
        dn = ds.read().astype(float)
    assert detect_s2_dn_offset(dn)[0] == 1000
    assert detect_s2_dn_offset(harmonise_s2_dn(dn, "04.00"))[0] == 0
