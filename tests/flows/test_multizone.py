"""End to end: ``update_inventory`` over an AOI across UTM zones 42N / 43N (the seam is 72° E).

A small synthetic catalog (written here with rasterio: S2 L2A 12 bands + SCL and S1 GRD sigma0 in
EPSG:32643, the DEM in EPSG:4326) holds three lakes, all within the 1 km margin of the seam, so
both zone parts' grids see each of them: one straddling 72° E (its centre 60 m west of it, so the
EPSG:32642 part, reading warped data, owns it), one west and one east of the seam; the east one
dries on the last date. Guards: each lake comes out once (one ``lake_id``, one observation per
acquisition, from the part that owns it), with an area within a pixel ring of the truth; the dry
lake is marked absent once, by its own part (the other part saw it dry too, in its margin, but may
not decide there); each acquisition is one scene per part, counted in the report; a second run
is a no-op.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
from pyproj import Transformer
from rasterio.features import rasterize
from rasterio.transform import Affine
from shapely.geometry import Point, box, mapping
from sqlalchemy import Engine, text

from demo.synthetic import stac
from flows.aoi import AoiSpec

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]

DATA_EPSG = 32643
"""CRS of the S2 and S1 files (the S2 tile's zone); the 32642 part warps them onto its grid."""
SEAM = 72.0
LAT = 43.01
AOI = box(71.985, 43.0, 72.015, 43.02)
"""About 2.4 × 2.2 km, half in each zone."""
LAKES: dict[str, tuple[float, float, tuple[float | None, ...]]] = {
    # name: (centre lon, lat, radius in m on each date; None: dry)
    "straddling": (SEAM - 60 / 81_400, LAT, (150.0, 190.0, 190.0)),  # 60 m west of the seam, 130 m past it
    "west": (71.992, 43.006, (120.0, 120.0, 120.0)),  # ~650 m west: inside the east part's margin
    "east": (72.009, 43.014, (130.0, 130.0, None)),  # ~730 m east: inside the west part's margin; dries
}
DATES = (date(2024, 7, 4), date(2024, 7, 24), date(2024, 8, 13))
LAST_WET = 1
"""The last date every lake holds water (the truth of the inventory's current areas)."""
S2_BANDS = {
    # band: (resolution m, land reflectance, water reflectance)
    "B01": (60, 0.10, 0.07),
    "B02": (10, 0.11, 0.07),
    "B03": (10, 0.13, 0.08),
    "B04": (10, 0.15, 0.05),
    "B05": (20, 0.17, 0.04),
    "B06": (20, 0.19, 0.03),
    "B07": (20, 0.20, 0.025),
    "B08": (10, 0.22, 0.02),
    "B8A": (20, 0.23, 0.02),
    "B09": (60, 0.23, 0.015),
    "B11": (20, 0.28, 0.01),
    "B12": (20, 0.24, 0.008),
}
OFFSET_DN = 1000
"""BOA_ADD_OFFSET of processing baseline 05.09."""

_to_data = Transformer.from_crs(4326, DATA_EPSG, always_xy=True)
_to_lonlat = Transformer.from_crs(DATA_EPSG, 4326, always_xy=True)


def _outline(name: str, day: int) -> Any:
    """The lake's disc on date ``day``, DATA_EPSG metres (empty when dry)."""
    lon, lat, radii = LAKES[name]
    radius = radii[day]
    return Point(*_to_data.transform(lon, lat)).buffer(radius, quad_segs=32) if radius else Point()


def _lonlat_box(x0: float, y0: float, x1: float, y1: float) -> object:
    """A UTM box (metres, DATA_EPSG) as a densified EPSG:4326 polygon."""
    ring = box(x0, y0, x1, y1).segmentize(100.0)
    return type(ring)([_to_lonlat.transform(x, y) for x, y in ring.exterior.coords])


def _write_catalog(root: Path) -> Path:
    """S2 (2 dates), S1 (2 dates) and one DEM over the AOI plus 1.5 km; returns the catalog root."""
    xs, ys = _to_data.transform(*np.array(AOI.exterior.coords).T)
    x0 = math.floor((min(xs) - 1500) / 60) * 60
    y1 = math.ceil((max(ys) + 1500) / 60) * 60
    size = math.ceil((max(max(xs) - x0, y1 - min(ys)) + 1500) / 60) * 6  # 10 m pixels, a multiple of 6
    t10 = Affine(10, 0, x0, 0, -10, y1)
    footprint = _lonlat_box(x0, y1 - 10 * size, x0 + 10 * size, y1)
    s2_items, s1_items = [], []
    for d, day in enumerate(DATES):
        discs = [(_outline(n, d), 1) for n in LAKES if LAKES[n][2][d]]
        water = rasterize(discs, out_shape=(size, size), transform=t10) == 1
        stamp = f"{day:%Y%m%d}T055641"
        item_id = f"S2A_MSIL2A_{stamp}_N0509_R019_T43TBH_{day:%Y%m%d}T093512"
        folder = root / "sentinel-2-l2a" / item_id
        assets = {}
        for band, (res, land, wet) in S2_BANDS.items():
            refl = np.where(water, wet, land)
            k = res // 10
            native = refl.reshape(size // k, k, size // k, k).mean(axis=(1, 3))
            dn = np.clip(np.rint(native * 10000) + OFFSET_DN, 1, 65535).astype(np.uint16)
            href = folder / f"T43TBH_{stamp}_{band}_{res}m.tif"
            t = Affine(res, 0, x0, 0, -res, y1)
            stac.write_cog(href, dn, t, DATA_EPSG, 0)
            assets[band] = stac.s2_asset(href, band, res, dn.shape, t, OFFSET_DN)
        scl = np.where(water.reshape(size // 2, 2, size // 2, 2).mean(axis=(1, 3)) >= 0.5, 6, 5).astype(np.uint8)
        href = folder / f"T43TBH_{stamp}_SCL_20m.tif"
        t20 = Affine(20, 0, x0, 0, -20, y1)
        stac.write_cog(href, scl, t20, DATA_EPSG, 0)
        assets["SCL"] = stac.s2_asset(href, "SCL", 20, scl.shape, t20, 0)
        props = {
            "platform": "sentinel-2a",
            "constellation": "sentinel-2",
            "instruments": ["msi"],
            "gsd": 10.0,
            "eo:cloud_cover": 0.0,
            "proj:epsg": DATA_EPSG,
            "proj:code": f"EPSG:{DATA_EPSG}",
            "s2:processing_baseline": "05.09",
            "s2:mgrs_tile": "43TBH",
            "s2:product_type": "S2MSI2A",
            "s2:boa_add_offset": -OFFSET_DN,
        }
        when = datetime(day.year, day.month, day.day, 5, 56, 41, tzinfo=UTC)
        s2_items.append(
            stac.make_item(
                item_id, mapping(footprint), list(footprint.bounds), when, props, assets, ("eo", "raster", "sat")
            )
        )

        s1_day = day + timedelta(days=2)
        water20 = water.reshape(size // 2, 2, size // 2, 2).mean(axis=(1, 3))
        s1_id = f"S1A_IW_GRDH_1SDV_{s1_day:%Y%m%d}T125231_{s1_day:%Y%m%d}T125256_05462{d}_06A1B{d}_AB1{d}"
        s1_assets = {}
        for pol, land_db, water_db in (("vv", -10.0, -21.0), ("vh", -17.0, -28.0)):
            sigma0 = (10 ** (np.where(water20 >= 0.5, water_db, land_db) / 10)).astype(np.float32)
            href = root / "sentinel-1-grd" / s1_id / f"iw-{pol}.tif"
            stac.write_cog(href, sigma0, t20, DATA_EPSG, float("nan"))
            s1_assets[pol] = stac.s1_asset(href, pol, sigma0.shape, t20)
        s1_props = {
            "platform": "sentinel-1a",
            "constellation": "sentinel-1",
            "instruments": ["c-sar"],
            "sar:instrument_mode": "IW",
            "sar:product_type": "GRD",
            "sar:polarizations": ["VV", "VH"],
            "sar:frequency_band": "C",
            "sar:observation_direction": "right",
            "sat:orbit_state": "ascending",
            "proj:epsg": DATA_EPSG,
            "proj:code": f"EPSG:{DATA_EPSG}",
        }
        s1_when = datetime(s1_day.year, s1_day.month, s1_day.day, 12, 52, 31, tzinfo=UTC)
        s1_items.append(
            stac.make_item(
                s1_id,
                mapping(footprint),
                list(footprint.bounds),
                s1_when,
                s1_props,
                s1_assets,
                ("raster", "sar", "sat"),
            )
        )

    # A flat Copernicus-DEM-like raster, 1 arc-second, EPSG:4326, over the footprint.
    lon0, lat0, lon1, lat1 = footprint.bounds
    step = 1 / 3600
    cols, rows = math.ceil((lon1 - lon0) / step) + 2, math.ceil((lat1 - lat0) / step) + 2
    t_dem = Affine(step, 0, lon0 - step, 0, -step, lat1 + step)
    dem_id = "Copernicus_DSM_COG_10_N43_00_E071_00_DEM"
    href = root / "cop-dem-glo-30" / dem_id / f"{dem_id}.tif"
    stac.write_cog(href, np.full((rows, cols), 3500.0, dtype=np.float32), t_dem, 4326, -32767.0)
    outline = box(t_dem.c, t_dem.f + rows * t_dem.e, t_dem.c + cols * t_dem.a, t_dem.f)
    dem_item = stac.make_item(
        dem_id,
        mapping(outline),
        list(outline.bounds),
        datetime(2021, 4, 22, tzinfo=UTC),
        {"platform": "TanDEM-X", "gsd": 30.0, "proj:epsg": 4326, "proj:code": "EPSG:4326"},
        {"data": stac.dem_asset(href, (rows, cols), t_dem)},
        ("raster",),
    )
    collections = [
        stac.make_collection("sentinel-2-l2a", "S2 L2A across 72E (test).", s2_items),
        stac.make_collection("sentinel-1-grd", "S1 GRD across 72E (test).", s1_items),
        stac.make_collection("cop-dem-glo-30", "DEM across 72E (test).", [dem_item]),
    ]
    stac.save_catalog(root, "across-72e", "Acquisitions across UTM zones 42/43 (test).", collections)
    return root


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_catalog(tmp_path_factory.mktemp("across-72e"))


def _snapshot(engine: Engine) -> dict[str, object]:
    out: dict[str, object] = {}
    with engine.connect() as conn:
        for table in ("lake", "lake_version", "lake_observation", "scene", "lake_lineage"):
            out[table] = conn.execute(
                text(
                    f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                    f"FROM inventory.{table} t"
                )
            ).one()
    return out


def test_lakes_at_the_zone_seam_come_out_once(
    catalog: Path, db_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_backend: None
) -> None:
    from flows.update_inventory import update_inventory

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path / "home"))
    window = {
        "aoi": AoiSpec(name="across-72e", geometry=dict(mapping(AOI))),
        "start": DATES[0] - timedelta(days=1),
        "end": DATES[-1] + timedelta(days=3),  # the last S1 is 2 days after its S2
        "source": f"local:{catalog}",
        "model": "baseline",
    }
    report = update_inventory(**window)

    # One scene per acquisition and part, each counted and named by its part.
    assert report.failed == 0 and report.skipped == 0, report.markdown()
    assert report.found == len(DATES) and report.processed == 2 * len(DATES)
    assert report.zone_parts == ("EPSG:32642", "EPSG:32643")
    assert sorted(o.part or "" for o in report.outcomes) == sorted(["EPSG:32642", "EPSG:32643"] * len(DATES))
    assert "EPSG:32642" in report.markdown()

    with engine.connect() as conn:
        scenes = conn.execute(
            text("SELECT s2_product_id, inputs->>'zone_part' FROM inventory.scene ORDER BY 1, 2")
        ).all()
        lakes = gpd.read_postgis(
            "SELECT lake_id, status, area_m2, n_observations, geom FROM inventory.lake ORDER BY lake_id",
            conn,
            geom_col="geom",
        )
        observations = conn.execute(
            text(
                "SELECT o.lake_id, s.inputs->>'zone_part', count(*) FROM inventory.lake_observation o "
                "JOIN inventory.scene s USING (scene_id) WHERE o.present GROUP BY 1, 2"
            )
        ).all()
        absent = conn.execute(
            text(
                "SELECT o.lake_id, s.inputs->>'zone_part' FROM inventory.lake_observation o "
                "JOIN inventory.scene s USING (scene_id) WHERE NOT o.present ORDER BY 1, 2"
            )
        ).all()
    assert [z for _, z in scenes] == ["EPSG:32642", "EPSG:32643"] * len(DATES)
    dry: dict[int, list[str]] = {}
    for lake_id, zone in absent:
        dry.setdefault(int(lake_id), []).append(str(zone))

    assert len(lakes) == len(LAKES), lakes[["lake_id", "area_m2"]]
    owner = {"straddling": "EPSG:32642", "west": "EPSG:32642", "east": "EPSG:32643"}
    by_lake: dict[int, list[tuple[str, int]]] = {}
    for lake_id, zone, n in observations:
        by_lake.setdefault(int(lake_id), []).append((str(zone), int(n)))
    for name in LAKES:
        outline_ll = _lonlat_outline(name, LAST_WET)
        match = lakes[lakes.intersects(outline_ll)]
        assert len(match) == 1, f"{name}: {len(match)} lakes"
        lake = match.iloc[0]
        # One observation per acquisition (not one per part), all from the part owning it.
        wet = sum(1 for r in LAKES[name][2] if r)
        assert sorted(by_lake[int(lake.lake_id)]) == [(owner[name], wet)], (name, by_lake)
        # Seen dry once, by its own part only (the other part's footprint stops at the seam).
        assert dry.get(int(lake.lake_id), []) == ([] if wet == len(DATES) else [owner[name]]), (name, dry)
        assert int(lake.n_observations) == len(DATES) and lake.status == "active"
        # Area within a ring of one 10 m pixel of the truth (the lake's own zone measures it).
        true = _outline(name, LAST_WET)
        assert abs(float(lake.area_m2) - true.area) <= true.length * 10.0, (name, lake.area_m2, true.area)
    straddling = lakes[lakes.intersects(_lonlat_outline("straddling", LAST_WET))].iloc[0]
    west, _, east, _ = straddling.geom.bounds
    assert west < SEAM < east, "the straddling lake is mapped whole, across the seam"

    before = _snapshot(engine)
    again = update_inventory(**window)
    assert again.processed == 0 and again.failed == 0
    assert [o.reason for o in again.outcomes] == ["already processed"] * (2 * len(DATES))
    assert _snapshot(engine) == before


def _lonlat_outline(name: str, day: int) -> Any:
    disc = _outline(name, day)
    return type(disc)([_to_lonlat.transform(x, y) for x, y in disc.exterior.coords])
