"""SAFE readers on the real product metadata (S2 L2A baselines 02.14, 04.00, 05.09; S1 IW GRDH).

The S2 products carry the real ``MTD_MSIL2A.xml`` / ``MTD_TL.xml`` / ``manifest.safe`` of each
template with small synthetic bands written at the tile's upper-left corner; the S1 thermal-noise
parser reads the real noise XML. Faults: no manifest, a band missing, no baseline, zip-slip.
"""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import MultiPolygon, Point

from core.errors import InputError, SafeProductError
from tasks.safe_files import open_product, read_vsizip_member, unsafe_member
from tasks.safe_s2 import S2_SAFE_KEYS, s2_acquisition
from tests.helpers.safe_products import build_s2_safe, s2_spec_from_template


@pytest.fixture
def s2_templates(realdata: Path) -> Path:
    return realdata / "s2_safe_metadata"


@pytest.mark.parametrize(
    ("baseline", "epsg", "offset", "platform", "cloud_pct"),
    [
        ("02.14", 32722, 0.0, "sentinel-2b", 12.5),
        ("04.00", 32633, -0.1, "sentinel-2b", 12.5),
        ("05.09", 32701, -0.1, "sentinel-2a", 12.5),
    ],
)
@pytest.mark.parametrize("as_zip", [False, True])
def test_s2_product_reads_metadata_and_bands(
    s2_templates: Path,
    tmp_path: Path,
    baseline: str,
    epsg: int,
    offset: float,
    platform: str,
    cloud_pct: float,
    as_zip: bool,
) -> None:
    spec = s2_spec_from_template(s2_templates, baseline)
    path = build_s2_safe(tmp_path, s2_templates, spec, zip=as_zip)
    acq = s2_acquisition(open_product(path), "safe:test")

    assert acq.kind == "S2L2A" and acq.product_id == spec.product_id
    assert acq.processing_baseline == baseline
    assert acq.platform == platform
    assert acq.sensing_time == spec.sensing.replace(microsecond=24000)
    assert acq.cloud_cover == cloud_pct
    assert dict(acq.metadata)["safe:tile_epsg"] == str(epsg)
    assert [k for k, _ in acq.assets] == list(S2_SAFE_KEYS)
    # scale/offset as the metadata states them: reflectance = DN / 10000 + BOA_ADD_OFFSET / 10000
    b04 = acq.scaling_of("B04")
    assert b04 is not None and b04.scale == pytest.approx(1e-4) and b04.offset == pytest.approx(offset)
    assert acq.boa_offset_applied is (False if offset else None)
    # each band at its finest resolution (B02 10 m, B05 20 m, B09 60 m); the Esri variant is GeoTIFF
    ext = ".tif" if baseline == "04.00" else ".jp2"
    assert acq.asset("B02").endswith(f"_B02_10m{ext}") and acq.asset("B05").endswith(f"_B05_20m{ext}")
    assert acq.asset("B09").endswith(f"_B09_60m{ext}") and acq.asset("SCL").endswith(f"_SCL_20m{ext}")
    assert acq.asset("B02").startswith("/vsizip/") is as_zip

    import rasterio

    with rasterio.open(acq.asset("B03")) as ds:  # GDAL reads the member, folder or zip alike
        assert ds.crs.to_epsg() == epsg
        assert int(ds.read(1)[0, 0]) == spec.rasters["B03"][0][0, 0]


def test_antimeridian_footprint_is_split(s2_templates: Path, tmp_path: Path) -> None:
    """Tile 01KAB's real footprint reaches from 179.24° E to 179.72° W: two parts, neither spanning the globe."""
    spec = s2_spec_from_template(s2_templates, "05.09")
    acq = s2_acquisition(open_product(build_s2_safe(tmp_path, s2_templates, spec)), "safe:test")
    fp = acq.footprint
    assert isinstance(fp, MultiPolygon) and len(fp.geoms) == 2
    west, east = sorted(fp.geoms, key=lambda g: g.bounds[0])
    assert west.bounds[0] == pytest.approx(-180) and west.bounds[2] == pytest.approx(-179.71545, abs=1e-3)
    assert east.bounds[0] == pytest.approx(179.2392, abs=1e-3) and east.bounds[2] == pytest.approx(180)
    assert fp.intersects(Point(179.5, -16.8)) and fp.intersects(Point(-179.85, -16.8))
    assert not fp.intersects(Point(0.0, -16.8))  # an unsplit ring would cover the whole latitude band


def test_esri_geotiff_footprint_is_not_split(s2_templates: Path, tmp_path: Path) -> None:
    spec = s2_spec_from_template(s2_templates, "04.00")
    acq = s2_acquisition(open_product(build_s2_safe(tmp_path, s2_templates, spec)), "safe:test")
    assert acq.footprint.geom_type == "Polygon" and 10 < acq.footprint.centroid.x < 20


def test_a_band_missing_is_refused_naming_it(s2_templates: Path, tmp_path: Path) -> None:
    spec = s2_spec_from_template(s2_templates, "05.09", omit=("B8A",))
    path = build_s2_safe(tmp_path, s2_templates, spec)
    with pytest.raises(SafeProductError, match=r"band B8A missing") as info:
        s2_acquisition(open_product(path), "safe:test")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, InputError)


def test_metadata_without_baseline_is_refused(s2_templates: Path, tmp_path: Path) -> None:
    path = build_s2_safe(tmp_path, s2_templates, s2_spec_from_template(s2_templates, "02.14", drop_baseline=True))
    with pytest.raises(SafeProductError, match=r"MTD_MSIL2A\.xml has no PROCESSING_BASELINE") as info:
        s2_acquisition(open_product(path), "safe:test")
    assert str(path) in str(info.value)


def test_offset_contradicting_the_baseline_is_refused(s2_templates: Path, tmp_path: Path) -> None:
    """A 05.09 template relabelled 03.01 still lists BOA_ADD_OFFSET -1000: which is right cannot be told."""
    path = build_s2_safe(tmp_path, s2_templates, s2_spec_from_template(s2_templates, "05.09", baseline="03.01"))
    with pytest.raises(SafeProductError, match=r"BOA_ADD_OFFSET of B01 is -1000 but baseline 03.01 means 0"):
        s2_acquisition(open_product(path), "safe:test")


def test_safe_without_manifest_is_refused(s2_templates: Path, tmp_path: Path) -> None:
    path = build_s2_safe(tmp_path, s2_templates, s2_spec_from_template(s2_templates, "02.14"))
    (path / "manifest.safe").unlink()
    with pytest.raises(SafeProductError, match=r"no manifest\.safe; not a SAFE product") as info:
        open_product(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("member", ["../evil.txt", "X.SAFE/../../evil.txt", "/etc/evil", "X.SAFE\\..\\evil"])
def test_zip_with_escaping_member_is_refused(s2_templates: Path, tmp_path: Path, member: str) -> None:
    spec = s2_spec_from_template(s2_templates, "02.14", extra_members=((member, b"x"),))
    (tmp_path / "in").mkdir()
    path = build_s2_safe(tmp_path / "in", s2_templates, spec, zip=True)
    with pytest.raises(SafeProductError, match=r"escapes the product folder; refused") as info:
        open_product(path)
    assert str(path) in str(info.value) and repr(member) in str(info.value)
    assert not (tmp_path / "evil.txt").exists()


def test_unsafe_member_names() -> None:
    assert not unsafe_member("P.SAFE/GRANULE/L2A_X/MTD_TL.xml")
    assert not unsafe_member("P.SAFE/a..b/c")  # dots inside a name are not a parent reference
    assert unsafe_member("P.SAFE/../x") and unsafe_member("/abs") and unsafe_member("C:/x") and unsafe_member("a\\b")


def test_vsizip_reader_accepts_only_product_members(s2_templates: Path, tmp_path: Path) -> None:
    path = build_s2_safe(tmp_path, s2_templates, s2_spec_from_template(s2_templates, "02.14"), zip=True)
    name = path.stem + ".SAFE"
    assert read_vsizip_member(f"/vsizip/{path}/{name}/MTD_MSIL2A.xml").startswith(b"<?xml")
    with pytest.raises(SafeProductError):
        read_vsizip_member(f"/vsizip/{path}/{name}/../x.xml")
    with pytest.raises(SafeProductError):
        read_vsizip_member("/vsicurl/http://example.org/x.zip/a.xml")


def test_zip_not_holding_one_safe_folder_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "S2A_MSIL2A_X.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/manifest.safe", "<x/>")
        zf.writestr("b/manifest.safe", "<x/>")
    with pytest.raises(SafeProductError, match=r"not one <name>\.SAFE folder"):
        open_product(path)


# --- Sentinel-1 thermal noise on the real XML -------------------------------------------------------


def test_real_noise_xml_parses_range_and_azimuth(realdata: Path) -> None:
    from tasks.s1_noise import parse_noise

    folder = realdata / "s1_safe_metadata" / next(p.name for p in (realdata / "s1_safe_metadata").glob("*.SAFE"))
    href = str(next((folder / "annotation" / "calibration").glob("noise-*-vv-*.xml")))
    noise = parse_noise(Path(href).read_bytes(), href)
    assert noise.polarisation == "VV"
    assert len(noise.range_lut.lines) == 26 and [b.swath for b in noise.azimuth] == ["IW1", "IW2", "IW3"]
    assert (noise.azimuth[1].first_sample, noise.azimuth[1].last_sample) == (8760, 17560)
    # At a node of both vectors the value is their product: line 0, sample 0 (IW1), and line 10.
    n = noise.noise_at(np.array([0, 10]), np.array([0, 40]))
    assert n[0, 0] == pytest.approx(2.392147e03 * 1.040491)
    assert n[0, 1] == pytest.approx(2.360252e03 * 1.040491)
    assert n[1, 0] == pytest.approx((2.392147e03 + (2.388127e03 - 2.392147e03) * 10 / 667) * 1.042047)


def test_noise_xml_of_the_old_layout_is_refused() -> None:
    from core.errors import RasterInputError
    from tasks.s1_noise import parse_noise

    old = b"<noise><noiseVectorList count='1'><noiseVector><line>0</line></noiseVector></noiseVectorList></noise>"
    with pytest.raises(RasterInputError, match=r"x\.xml: noise XML of the IPF < 2\.9 layout"):
        parse_noise(old, "x.xml")


def test_sensing_time_is_utc(s2_templates: Path, tmp_path: Path) -> None:
    acq = s2_acquisition(
        open_product(build_s2_safe(tmp_path, s2_templates, s2_spec_from_template(s2_templates, "02.14"))), "safe:t"
    )
    assert acq.sensing_time == datetime(2021, 1, 22, 13, 32, 29, 24000, tzinfo=UTC)


# --- Sentinel-1 GRD products ---------------------------------------------------------------------


def _small_s1(realdata: Path, tmp_path: Path, **changes: object) -> Path:
    from dataclasses import replace

    from rasterio.transform import Affine

    from tests.helpers.safe_products import S1Spec, build_s1_safe

    rng = np.random.default_rng(0)
    sigma0 = {pol: 10 ** (rng.uniform(-2.5, -1.0, (64, 80))) for pol in ("vv", "vh")}
    spec = S1Spec(
        product_id="S1A_IW_GRDH_1SDV_20240706T125231_20240706T125256_054623_05D599_374F",
        start=datetime(2024, 7, 6, 12, 52, 31, tzinfo=UTC),
        stop=datetime(2024, 7, 6, 12, 52, 56, tzinfo=UTC),
        epsg=32643,
        transform=Affine(20, 0, 660000, 0, -20, 4780000),
        sigma0=sigma0,
    )
    return build_s1_safe(tmp_path, realdata / "s1_safe_metadata", replace(spec, **changes))  # type: ignore[arg-type]


@pytest.mark.parametrize("as_zip", [False, True])
def test_s1_product_becomes_a_grd_acquisition(realdata: Path, tmp_path: Path, as_zip: bool) -> None:
    from tasks.safe_s1 import s1_acquisition
    from tests.helpers.safe_products import zip_product

    path = _small_s1(realdata, tmp_path)
    if as_zip:
        path = zip_product(path)
    acq = s1_acquisition(open_product(path), "safe:test")
    assert acq.kind == "S1GRD" and acq.platform == "sentinel-1a"
    assert acq.sensing_time == datetime(2024, 7, 6, 12, 52, 31, tzinfo=UTC)
    keys = {k for k, _ in acq.assets}
    assert keys == {f"{p}{pol}" for p in ("", "annotation-", "calibration-", "noise-") for pol in ("vv", "vh")}
    assert acq.asset("vv").endswith("-vv-20240706t125231-20240706t125256-054623-05d599-001.tiff")
    assert acq.asset("noise-vh").split("/")[-1].startswith("noise-s1a-iw-grd-vh-")
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(32643, 4326, always_xy=True).transform(660000 + 40 * 20, 4780000 - 32 * 20)
    assert acq.footprint.contains(Point(lon, lat))  # the manifest footprint, rewritten for the grid's centre
    assert acq.footprint.area == pytest.approx(0.02 * 0.012, rel=0.2)  # 1.6 km × 1.28 km at 43° N, degrees²
    assert acq.metadata == (("safe:product", str(path)),)  # no declared scale: read as DN with its LUT


def test_s1_product_without_manifest_is_refused(realdata: Path, tmp_path: Path) -> None:
    path = _small_s1(realdata, tmp_path, drop_manifest=True)
    with pytest.raises(SafeProductError, match=r"no manifest\.safe"):
        open_product(path)


def test_s1_product_missing_its_noise_xml_is_refused(realdata: Path, tmp_path: Path) -> None:
    from tasks.safe_s1 import s1_acquisition

    path = _small_s1(realdata, tmp_path)
    noise = next((path / "annotation" / "calibration").glob("noise-*-vh-*.xml"))
    noise.unlink()
    with pytest.raises(SafeProductError, match=r"noise-vh file missing \(annotation/calibration/noise-s1a") as info:
        s1_acquisition(open_product(path), "safe:test")
    assert str(path) in str(info.value)


def test_real_size_grd_is_calibrated_and_denoised_where_the_geolocation_grid_says(
    realdata: Path, tmp_path: Path
) -> None:
    """The real product's own annotation, LUTs and size (16676 × 26144): a sparse DN raster, one patch written.

    At a geolocation grid point (line L, sample P) in IW2, σ⁰ on a 1 km grid around its latitude /
    longitude must be (DN² − N(L, P)) / A(L, P)², with A and N read from the real XML here by hand.
    """
    import shutil

    import rasterio
    from rasterio.crs import CRS
    from rasterio.windows import Window

    from tasks.grid import grid_for_geometry
    from tasks.s1_grd import parse_annotation
    from tasks.s1_read import read_s1_acquisition
    from tasks.safe_s1 import s1_acquisition

    src = realdata / "s1_safe_metadata" / next(p.name for p in (realdata / "s1_safe_metadata").glob("*.SAFE"))
    safe = tmp_path / src.name
    shutil.copytree(src, safe)
    ann_vv = next((safe / "annotation").glob("s1a-*-vv-*.xml"))
    geo = parse_annotation(ann_vv.read_bytes(), str(ann_vv))
    k = int(np.argmin((geo.lines - 8000) ** 2 + (geo.pixels - 13000) ** 2))
    line, pixel = int(geo.lines[k]), int(geo.pixels[k])
    dn_value = 60  # dark (≈ −21 dB before the noise is removed): the noise is a large share of DN²
    (safe / "measurement").mkdir()
    for pol in ("vv", "vh"):
        name = ann_vv.name.replace("-vv-", f"-{pol}-").replace("-001.xml", "-001.tiff" if pol == "vv" else "-002.tiff")
        with rasterio.open(
            safe / "measurement" / name,
            "w",
            driver="GTiff",
            width=geo.shape[1],
            height=geo.shape[0],
            count=1,
            dtype="uint16",
            tiled=True,
            blockxsize=512,
            blockysize=512,
            SPARSE_OK=True,
            compress="deflate",
            gcps=geo.gcps(),
            crs=CRS.from_epsg(4326),
        ) as ds:  # unwritten blocks stay sparse (read as 0 = nodata)
            ds.write(np.full((800, 800), dn_value, np.uint16), 1, window=Window(pixel - 400, line - 400, 800, 800))
    acq = s1_acquisition(open_product(safe), "safe:test")
    lat, lon = float(geo.lat[k]), float(geo.lon[k])
    grid = grid_for_geometry(Point(lon, lat).buffer(0.005))
    sigma_db = read_s1_acquisition(acq, grid, speckle_size=1).backscatter
    centre = sigma_db[:, grid.shape[0] // 2, grid.shape[1] // 2]

    def expected(pol: str) -> tuple[float, float]:
        import xml.etree.ElementTree as ET

        cal = ET.parse(next((safe / "annotation" / "calibration").glob(f"calibration-*-{pol}-*.xml"))).getroot()
        vecs = cal.findall("calibrationVectorList/calibrationVector")
        lines = np.array([float(v.findtext("line", "")) for v in vecs])
        at_lines = [
            np.interp(
                pixel,
                np.array(v.findtext("pixel", "").split(), float),
                np.array(v.findtext("sigmaNought", "").split(), float),
            )
            for v in vecs
        ]
        a = np.interp(line, lines, at_lines)
        noise_root = ET.parse(next((safe / "annotation" / "calibration").glob(f"noise-*-{pol}-*.xml"))).getroot()
        rv = noise_root.findall("noiseRangeVectorList/noiseRangeVector")
        n_lines = np.array([float(v.findtext("line", "")) for v in rv])
        n_at = [
            np.interp(
                pixel,
                np.array(v.findtext("pixel", "").split(), float),
                np.array(v.findtext("noiseRangeLut", "").split(), float),
            )
            for v in rv
        ]
        block = next(
            b
            for b in noise_root.findall("noiseAzimuthVectorList/noiseAzimuthVector")
            if int(b.findtext("firstRangeSample", "")) <= pixel <= int(b.findtext("lastRangeSample", ""))
        )
        az = np.interp(
            line,
            np.array(block.findtext("line", "").split(), float),
            np.array(block.findtext("noiseAzimuthLut", "").split(), float),
        )
        noise = np.interp(line, n_lines, n_at) * az
        return float(10 * np.log10((dn_value**2 - noise) / a**2)), float(10 * np.log10(dn_value**2 / a**2))

    for i, pol in enumerate(("vv", "vh")):
        denoised, noisy = expected(pol)
        print(
            f"{pol}: σ⁰ {centre[i]:.4f} dB at line {line}, sample {pixel}; expected {denoised:.4f} (noisy {noisy:.4f})"
        )
        assert centre[i] == pytest.approx(denoised, abs=0.01)
        assert noisy - denoised > 0.5  # the noise removal is what makes the difference here
