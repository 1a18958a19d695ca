"""The demo data generator: catalog shape, raster grids, scene physics, truth and determinism.

Every end-to-end test scores the pipeline against this generator, so these tests pin what the
pipeline relies on: native S2 grids, the baseline offset, one S2 date without an S1 pair, one lake
under a thick cloud, snow that fools a naive MNDWI rule, dark water in SAR and flat lakes in the DEM.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pystac
import pytest
import rasterio
from rasterio.features import rasterize

from demo.synthetic import DemoCatalog, generate_demo_catalog, load_truth

S2_KEYS = {"B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12", "SCL"}
NATIVE_RES = {
    "B02": 10,
    "B03": 10,
    "B04": 10,
    "B08": 10,
    "B05": 20,
    "B06": 20,
    "B07": 20,
    "B8A": 20,
    "B11": 20,
    "B12": 20,
    "SCL": 20,
    "B01": 60,
    "B09": 60,
}
REQUIRED = {"growing", "appearing", "draining", "clouded", "stable-1"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    """One 256 px demo catalog shared by the module (about 1–2 s)."""
    return generate_demo_catalog(tmp_path_factory.mktemp("demo"), size_px=256, seed=0)


@pytest.fixture(scope="module")
def items(demo: DemoCatalog) -> dict[str, list[pystac.Item]]:
    catalog = pystac.Catalog.from_file(str(demo.catalog_path))
    return {c.id: sorted(c.get_items(), key=lambda i: i.datetime) for c in catalog.get_children()}


@pytest.fixture(scope="module")
def truth(demo: DemoCatalog) -> gpd.GeoDataFrame:
    return load_truth(demo.truth_path)


def _read(item: pystac.Item, key: str) -> tuple[np.ndarray, rasterio.Affine]:
    with rasterio.open(item.assets[key].get_absolute_href()) as src:
        return src.read(1), src.transform


def _reflectance(item: pystac.Item, key: str) -> np.ndarray:
    offset = 1000 if item.properties["s2:processing_baseline"] >= "04.00" else 0
    dn, _ = _read(item, key)
    return (dn.astype(np.float64) - offset) / 10000


def _mask(geoms: gpd.GeoSeries, shape: tuple[int, int], transform: rasterio.Affine) -> np.ndarray:
    """Pixel-centre mask of UTM geometries on a grid."""
    return rasterize([(g, 1) for g in geoms], out_shape=shape, transform=transform).astype(bool)


def test_catalog_has_the_expected_collections_items_and_assets(
    demo: DemoCatalog, items: dict[str, list[pystac.Item]]
) -> None:
    """Pystac reads the static catalog; S2 items carry all 13 band assets, S1 vv/vh, DEM data."""
    assert set(items) == {"sentinel-2-l2a", "sentinel-1-grd", "cop-dem-glo-30"}
    s2, s1, dem = items["sentinel-2-l2a"], items["sentinel-1-grd"], items["cop-dem-glo-30"]
    assert len(s2) == 5 and len(s1) == 4 and len(dem) == 1
    assert [i.datetime.date() for i in s2] == list(demo.dates)
    for item in s2:
        assert set(item.assets) == S2_KEYS
        assert item.properties["proj:epsg"] == 32643 and item.properties["s2:mgrs_tile"] == "43TGH"
        assert item.properties["platform"] in {"sentinel-2a", "sentinel-2b"}
        assert 0 <= item.properties["eo:cloud_cover"] <= 100
        for asset in item.assets.values():
            assert asset.roles == ["data"] and asset.media_type == pystac.MediaType.COG
            assert Path(asset.get_absolute_href()).is_file()
    baselines = [i.properties["s2:processing_baseline"] for i in s2]
    assert baselines.count("02.14") == 1 and baselines.count("05.09") == 4
    for item in s1:
        assert set(item.assets) == {"vv", "vh"}
        assert item.properties["sar:polarizations"] == ["VV", "VH"] and item.properties["sar:product_type"] == "GRD"
        assert item.properties["sar:instrument_mode"] == "IW" and item.properties["platform"] == "sentinel-1a"
    assert dem[0].properties["platform"] == "TanDEM-X" and dem[0].datetime.date() == date(2021, 4, 22)
    # Self-contained: every asset href in the JSON is relative.
    for path in demo.root.rglob("*.json"):
        for asset in json.loads(path.read_text()).get("assets", {}).values():
            assert asset["href"].startswith("./")
    aoi = json.loads(demo.aoi_path.read_text())["features"]
    assert (
        len(aoi) == 1 and aoi[0]["geometry"]["type"] == "Polygon" and aoi[0]["properties"] == {"name": "demo-tienshan"}
    )


def test_each_raster_has_its_native_grid_crs_dtype_and_nodata(items: dict[str, list[pystac.Item]]) -> None:
    """S2 bands at 10/20/60 m sharing one corner, S1 at 20 m float32 NaN, DEM 1" EPSG:4326."""
    for item in items["sentinel-2-l2a"]:
        corners = set()
        for key, asset in item.assets.items():
            with rasterio.open(asset.get_absolute_href()) as src:
                assert src.crs.to_epsg() == 32643
                assert src.res == (NATIVE_RES[key], NATIVE_RES[key]), key
                assert src.dtypes[0] == ("uint8" if key == "SCL" else "uint16") and src.nodata == 0
                assert src.width * NATIVE_RES[key] >= 2560
                corners.add((src.transform.c, src.transform.f))
        assert len(corners) == 1
    for item in items["sentinel-1-grd"]:
        for key in ("vv", "vh"):
            with rasterio.open(item.assets[key].get_absolute_href()) as src:
                assert src.crs.to_epsg() == 32643 and src.res == (20.0, 20.0)
                assert src.dtypes[0] == "float32" and np.isnan(src.nodata)
    with rasterio.open(items["cop-dem-glo-30"][0].assets["data"].get_absolute_href()) as src:
        assert src.crs.to_epsg() == 4326 and src.res == pytest.approx((1 / 3600, 1 / 3600))
        assert src.dtypes[0] == "float32" and src.nodata == -32767.0
        assert 3250 < src.read(1).min() and src.read(1).max() < 4700


def test_baseline_offset_is_in_the_0509_dns_and_not_in_the_0214_ones(
    items: dict[str, list[pystac.Item]], truth: gpd.GeoDataFrame
) -> None:
    """DN = reflectance * 10000 + 1000 on 05.09 items only; harmonised, the same lake reads the same."""
    lake = truth[truth.lake == "stable-1"].to_crs(32643).geometry.iloc[0].buffer(-20)
    medians = {}
    for item in items["sentinel-2-l2a"]:
        dn, transform = _read(item, "B03")
        if item.properties["s2:processing_baseline"] == "05.09":
            assert dn.min() > 1000  # every reflectance >= 0 sits above the offset
            assert item.assets["B03"].extra_fields["raster:bands"][0]["offset"] == pytest.approx(-0.1)
        else:
            assert dn.min() < 1000  # unshifted: water (~0.06) reads ~600
            assert item.assets["B03"].extra_fields["raster:bands"][0]["offset"] == 0
        medians[item.id] = float(np.median(_reflectance(item, "B03")[_mask([lake], dn.shape, transform)]))
    values = np.array(list(medians.values()))
    assert 0.03 < values.min() and values.max() < 0.08  # water, visible, after removing the offset
    assert values.max() - values.min() < 0.005


def test_truth_lakes_change_as_specified(truth: gpd.GeoDataFrame, demo: DemoCatalog) -> None:
    """Growing grows each date; appearing from date 3; draining gone from date 3; small lakes < 0.5 ha."""
    assert truth.crs.to_epsg() == 4326 and isinstance(truth.date.iloc[0], date)
    assert REQUIRED | {"small-1"} <= set(truth.lake)
    d = list(demo.dates)
    by = {name: grp.set_index("date").area_m2 for name, grp in truth.groupby("lake")}
    growing = [by["growing"][day] for day in d]
    assert growing[0] >= 30000 and all(b > a * 1.1 for a, b in itertools.pairwise(growing))
    assert set(by["appearing"].index) == set(d[2:]) and by["appearing"].min() >= 10000
    assert set(by["draining"].index) == set(d[:2])
    assert set(by["clouded"].index) == set(d) and by["clouded"].nunique() == 1
    small = truth[truth.lake.str.startswith("small")]
    assert (small.area_m2 < 5000).all() and not small.min_mappable.any()
    assert truth[truth.lake.isin(REQUIRED)].min_mappable.all()
    hidden = truth[~truth.visible]
    assert list(zip(hidden.lake, hidden.date, strict=True)) == [("clouded", d[1])]
    # area_m2 is the UTM area of the stored outline.
    utm_area = truth.to_crs(32643).area
    assert np.allclose(utm_area, truth.area_m2, rtol=1e-3)
    # Lakes keep 150 m apart (max extents over all dates).
    extents = truth.to_crs(32643).groupby("lake").geometry.agg(lambda g: g.union_all())
    names = list(extents.index)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert extents[a].distance(extents[b]) >= 150, (a, b)


def test_one_s2_date_has_no_s1_within_7_days(items: dict[str, list[pystac.Item]], demo: DemoCatalog) -> None:
    """Only 2024-09-02 lacks an S1 acquisition within 7 days (nearest is 10 days away)."""
    s1_days = [i.datetime.date() for i in items["sentinel-1-grd"]]
    gaps = {day: min(abs((s - day).days) for s in s1_days) for day in demo.dates}
    assert [day for day, gap in gaps.items() if gap > 7] == [date(2024, 9, 2)]
    info = json.loads((demo.root / "truth" / "truth.json").read_text())
    assert [row["has_s1_pair"] for row in info["dates"]] == [gap <= 7 for gap in gaps.values()]
    assert info["dates"][1]["cloud_fraction"] > 0.02 and info["dates"][0]["cloud_fraction"] == 0


def test_scl_marks_the_clouded_lake_as_thick_cloud_on_date_2_only(
    items: dict[str, list[pystac.Item]], truth: gpd.GeoDataFrame
) -> None:
    """The whole clouded lake plus a 100 m margin is SCL 8/9 (its outline itself 9) on date 2; water otherwise."""
    lake = truth[truth.lake == "clouded"].to_crs(32643).geometry.iloc[0]
    for k, item in enumerate(items["sentinel-2-l2a"]):
        scl, transform = _read(item, "SCL")
        inside = scl[_mask([lake.buffer(-15)], scl.shape, transform)]
        if k == 1:
            assert np.isin(scl[_mask([lake.buffer(100)], scl.shape, transform)], (8, 9)).all()
            assert (inside == 9).all()
        else:
            assert (inside == 6).mean() > 0.9


def test_snow_fools_mndwi_but_not_ndwi(items: dict[str, list[pystac.Item]], truth: gpd.GeoDataFrame) -> None:
    """Measured at 20 m on every date: water MNDWI ~0.85 (p5 >= 0.84) and snow MNDWI ~0.79 (p5 ~0.6),
    so an MNDWI > 0.3 rule maps snow as water; NDWI(B03, B08) is ~0.69 on water and ~0.10 on snow
    (p95 ~0.24), so it separates them.
    """
    for item in items["sentinel-2-l2a"]:
        day = item.datetime.date()
        scl, t20 = _read(item, "SCL")
        b03 = _reflectance(item, "B03")
        b03_20 = b03.reshape(b03.shape[0] // 2, 2, -1, 2).mean(axis=(1, 3))
        b08_20 = _reflectance(item, "B08").reshape(b03_20.shape[0], 2, -1, 2).mean(axis=(1, 3))
        b11 = _reflectance(item, "B11")
        mndwi = (b03_20 - b11) / (b03_20 + b11)
        ndwi = (b03_20 - b08_20) / (b03_20 + b08_20)
        lakes = truth[(truth.date == day) & truth.visible & truth.min_mappable].to_crs(32643)
        water = _mask(lakes.geometry.buffer(-25), scl.shape, t20)
        snow = scl == 11
        assert water.sum() > 50 and snow.mean() > 0.05
        assert np.percentile(mndwi[water], 5) > 0.3
        assert np.median(mndwi[snow]) > 0.3 and (mndwi[snow] > 0.3).mean() > 0.9
        assert np.percentile(ndwi[water], 5) > np.percentile(ndwi[snow], 95) + 0.2
        assert (b03_20[water] > b08_20[water]).all() and np.percentile(b11[water], 95) < 0.02


def test_s1_water_is_dark_and_follows_the_paired_s2_extent(
    items: dict[str, list[pystac.Item]], truth: gpd.GeoDataFrame
) -> None:
    """VV ~ -23 dB on lakes vs ~ -12 dB on bare ground (4-look speckle, 20 m); the growing lake is
    bigger in the later S1 scene, as on the paired S2 date.
    """
    s2 = {i.datetime.date(): i for i in items["sentinel-2-l2a"]}
    s2_dates = list(s2)
    utm = truth.to_crs(32643)
    dark = []
    for item in items["sentinel-1-grd"]:
        pair = min(s2, key=lambda d: abs((d - item.datetime.date()).days))
        vv, t = _read(item, "vv")
        vh, _ = _read(item, "vh")
        scl, scl_t = _read(s2[pair], "SCL")
        assert scl_t == t
        lakes = utm[(utm.date == pair) & utm.min_mappable]
        water = _mask(lakes.geometry.buffer(-25), vv.shape, t)
        land = (scl == 5) & ~_mask(utm.geometry.buffer(100), vv.shape, t) & ~np.isnan(vv)
        nodata = np.isnan(vv)
        assert np.array_equal(nodata, np.isnan(vh)) and not nodata[water].any()
        # One scene (paired with date 3) is clipped by the swath edge: a NaN strip, not fake zeros.
        assert nodata.any() == (pair == s2_dates[2]) and (vv[~nodata] > 0).all()
        assert nodata[:, 8:].sum() == 0
        vv_db, vh_db = 10 * np.log10(vv), 10 * np.log10(vh)
        assert -25 < np.median(vv_db[water]) < -20 and -32 < np.median(vh_db[water]) < -27
        assert -15 < np.median(vv_db[land]) < -8 and -23 < np.median(vh_db[land]) < -15
        grow = utm[utm.lake == "growing"].geometry.union_all()
        dark.append(float((vv_db[_mask([grow], vv.shape, t)] < -18).sum()))
    assert dark[-1] > dark[0] * 1.5


def test_dem_is_flat_inside_each_lake_and_lakes_sit_in_depressions(
    items: dict[str, list[pystac.Item]], truth: gpd.GeoDataFrame
) -> None:
    """Every 1" DEM pixel inside a lake's max extent equals its level; a 20-50 m ring around is higher."""
    dem, t = _read(items["cop-dem-glo-30"][0], "data")
    utm = truth.to_crs(32643)
    for name, grp in utm.groupby("lake"):
        extent = grp.geometry.union_all()
        level = grp.level_m.iloc[0]
        inside = _mask(gpd.GeoSeries([extent], crs=32643).to_crs(4326), dem.shape, t)
        ring = gpd.GeoSeries([extent.buffer(50).difference(extent.buffer(20))], crs=32643).to_crs(4326)
        around = dem[_mask(ring, dem.shape, t)]
        assert inside.sum() >= 1 and np.all(dem[inside] == level), name
        assert around.size and around.min() > level + 1, name


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_bytes_and_another_seed_differs(demo: DemoCatalog, tmp_path: Path) -> None:
    """Regenerating with the same arguments (into another folder, and over itself) reproduces every byte."""
    again = generate_demo_catalog(tmp_path / "again", size_px=256, seed=0)
    assert _digest(again.root) == _digest(demo.root)
    other = generate_demo_catalog(tmp_path / "again", size_px=256, seed=1)
    changed = {k for k, v in _digest(other.root).items() if _digest(demo.root).get(k) != v}
    assert any(k.endswith("_B03_10m.tif") for k in changed) and "truth/truth.geojson" in changed


def test_rejects_scenes_too_small_for_the_layout(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size_px"):
        generate_demo_catalog(tmp_path, size_px=128)


@pytest.mark.slow
def test_default_scene_is_fast_and_holds_every_lake(tmp_path: Path) -> None:
    """The default 512 px, 5-date demo takes well under 30 s and keeps all ten lakes."""
    start = time.perf_counter()
    demo = generate_demo_catalog(tmp_path)
    assert time.perf_counter() - start < 30
    names = set(load_truth(demo.truth_path).lake)
    assert names == REQUIRED | {"stable-2", "small-1", "small-2", "small-3", "contact"}
