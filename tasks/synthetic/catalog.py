"""The demo data generator: a local static STAC catalog over one Tien Shan valley, plus its truth.

``generate_demo_catalog`` writes, for 5 summer dates, Sentinel-2 L2A (per-band COGs at native
resolution, uint16 DN, nodata 0), Sentinel-1 GRD (geocoded sigma0, linear power, float32, 20 m,
nodata NaN) and one Copernicus-DEM-like GLO-30 raster (float32 m, EPSG:4326, 1", nodata -32767),
then the truth lakes per date. The same arguments give the same bytes.

Layout under ``root``::

    catalog.json                          static STAC catalog, relative hrefs
    sentinel-2-l2a/<item>/{<item>.json, T43TGH_<time>_<band>_<res>m.tif}
    sentinel-1-grd/<item>/{<item>.json, iw-vv.tif, iw-vh.tif}
    cop-dem-glo-30/<item>/{<item>.json, <item>.tif}
    aoi.geojson                           the AOI (one feature)
    glaciers.geojson                      RGI-like glacier outlines (EPSG:4326)
    truth/truth.geojson, truth/truth.json lakes per date; dates, S1 pairing, cloud fractions
"""

from __future__ import annotations

import shutil
import zlib
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pystac
from prefect import task
from shapely.geometry import Polygon, box, mapping

from tasks.synthetic import stac
from tasks.synthetic.dem import sample_dem
from tasks.synthetic.lakes import MIN_MAPPABLE_M2, carve_lakes, lake_specs, place_lakes, select_lakes
from tasks.synthetic.scene import BAND_RES_M, BANDS, DateScene, Landscape, build_landscape, render_date, render_s1, scl_to_20m, to_native
from tasks.synthetic.terrain import UTM_EPSG, SceneGrid, build_terrain, make_grid
from tasks.synthetic.truth import glacier_features, lake_features, load_truth, to_wgs84, write_geojson, write_json

__all__ = ["DemoCatalog", "baseline_offset", "generate_demo_catalog", "generate_demo_catalog_task", "load_truth"]

S2_TIME = time(5, 56, 41, 24000)
S2_SCHEDULE = (
    (date(2024, 7, 4), "sentinel-2a", "05.09"),
    (date(2024, 7, 24), "sentinel-2a", "05.09"),
    (date(2024, 8, 18), "sentinel-2b", "02.14"),
    (date(2024, 9, 2), "sentinel-2a", "05.09"),
    (date(2024, 9, 22), "sentinel-2a", "05.09"),
)
"""S2 date, platform and processing baseline (02.14 predates the BOA_ADD_OFFSET of 04.00)."""
S1_TIME = time(12, 52, 31)
S1_SCHEDULE = ((date(2024, 7, 6), 0), (date(2024, 7, 18), 1), (date(2024, 8, 23), 2), (date(2024, 9, 16), 4))
"""S1 date and the S2 date index it pairs with; 2024-09-02 has no S1 within 7 days (nearest: 10 days)."""
MGRS_TILE = "43TGH"
CLOUD_SCL = (3, 8, 9, 10)
"""SCL classes the pipeline masks: cloud shadow, cloud medium / high probability, thin cirrus."""
COLLECTIONS = ("sentinel-2-l2a", "sentinel-1-grd", "cop-dem-glo-30")
DEM_ID = "Copernicus_DSM_COG_10_N43_00_E077_00_DEM"


@dataclass(frozen=True)
class DemoCatalog:
    """Where the generated demo lives."""

    root: Path
    catalog_path: Path
    """root / "catalog.json"."""
    aoi_path: Path
    """root / "aoi.geojson": a FeatureCollection of one Feature, Polygon, EPSG:4326, property ``name``."""
    truth_path: Path
    """root / "truth" / "truth.geojson": one feature per lake per S2 date with water, EPSG:4326."""
    dates: tuple[date, ...]
    """S2 acquisition dates."""


def baseline_offset(baseline: str) -> int:
    """BOA_ADD_OFFSET magnitude in DN: 1000 from processing baseline 04.00 on, else 0."""
    return 1000 if tuple(int(p) for p in baseline.split(".")) >= (4, 0) else 0


def _footprint(grid: SceneGrid, inset_m: float = 0.0) -> Polygon:
    """Scene outline in EPSG:4326, edges densified (UTM lines are curves in lon/lat)."""
    w, s, e, n = grid.bounds
    return to_wgs84(box(w + inset_m, s + inset_m, e - inset_m, n - inset_m).segmentize(grid.size_px * grid.res / 8))


def _clear_previous(root: Path) -> None:
    """Remove what an earlier run wrote, so no stale file survives (the root itself is kept)."""
    for name in (*COLLECTIONS, "truth"):
        if (root / name).is_dir():
            shutil.rmtree(root / name)
    for name in ("catalog.json", "aoi.geojson", "glaciers.geojson"):
        (root / name).unlink(missing_ok=True)


def _s2_item(root: Path, grid: SceneGrid, scene: DateScene, day: date, platform: str, baseline: str, footprint: Polygon) -> pystac.Item:
    """Write one S2 L2A acquisition's band COGs and return its item."""
    stamp = f"{day:%Y%m%d}T055641"
    item_id = f"S2{platform[-1].upper()}_MSIL2A_{stamp}_N{baseline.replace('.', '')}_R019_T{MGRS_TILE}_{day:%Y%m%d}T093512"
    folder = root / COLLECTIONS[0] / item_id
    offset = baseline_offset(baseline)
    assets = {}
    for b, band in enumerate(BANDS):
        res = BAND_RES_M[band]
        refl = to_native(scene.reflectance[b: b + 1], grid, res)[0]
        dn = np.clip(np.rint(refl * 10000) + offset, 1, 65535).astype(np.uint16)  # 0 is nodata
        href = folder / f"T{MGRS_TILE}_{stamp}_{band}_{res}m.tif"
        stac.write_cog(href, dn, grid.transform(res), UTM_EPSG, 0)
        assets[band] = stac.s2_asset(href, band, res, dn.shape, grid.transform(res), offset)
    scl = scl_to_20m(scene.scl, grid)
    href = folder / f"T{MGRS_TILE}_{stamp}_SCL_20m.tif"
    stac.write_cog(href, scl, grid.transform(20), UTM_EPSG, 0)
    assets["SCL"] = stac.s2_asset(href, "SCL", 20, scl.shape, grid.transform(20), 0)
    share = lambda classes: round(float(np.isin(scl, classes).mean()) * 100, 4)  # noqa: E731
    props = {
        "platform": platform, "constellation": "sentinel-2", "instruments": ["msi"], "gsd": 10.0,
        "eo:cloud_cover": share((8, 9, 10)), "proj:epsg": UTM_EPSG, "proj:code": f"EPSG:{UTM_EPSG}",
        "s2:processing_baseline": baseline, "s2:mgrs_tile": MGRS_TILE, "s2:product_type": "S2MSI2A",
        "s2:boa_add_offset": -offset, "s2:snow_ice_percentage": share((11,)), "s2:water_percentage": share((6,)),
        "s2:cloud_shadow_percentage": share((3,)), "s2:dark_features_percentage": share((2,)),
        "s2:mean_solar_zenith": round(90 - scene.sun_elevation, 3), "s2:mean_solar_azimuth": round(scene.sun_azimuth, 3),
        "sat:orbit_state": "descending", "sat:relative_orbit": 19,
    }
    when = datetime.combine(day, S2_TIME, tzinfo=timezone.utc)
    return stac.make_item(item_id, mapping(footprint), list(footprint.bounds), when, props, assets, ("eo", "raster", "sat"))


def _s1_item(root: Path, land: Landscape, scene: DateScene, index: int, day: date, footprint: Polygon) -> pystac.Item:
    """Write one S1 GRD acquisition (seeing the lakes of S2 date ``index``) and return its item."""
    absolute = 54623 + round((day - date(2024, 7, 6)).days * 175 / 12)  # S1A: 175 orbits per 12 days
    uid = zlib.crc32(day.isoformat().encode()) & 0xFFFF
    item_id = f"S1A_IW_GRDH_1SDV_{day:%Y%m%d}T125231_{day:%Y%m%d}T125256_{absolute:06d}_{absolute * 7 % 0xFFFFFF:06X}_{uid:04X}"
    grid = land.grid
    vv, vh = render_s1(land, scene.surface, index)
    assets = {}
    for pol, arr in (("vv", vv), ("vh", vh)):
        href = root / COLLECTIONS[1] / item_id / f"iw-{pol}.tif"
        stac.write_cog(href, arr, grid.transform(20), UTM_EPSG, float("nan"))
        assets[pol] = stac.s1_asset(href, pol, arr.shape, grid.transform(20))
    props = {
        "platform": "sentinel-1a", "constellation": "sentinel-1", "instruments": ["c-sar"],
        "sar:instrument_mode": "IW", "sar:product_type": "GRD", "sar:polarizations": ["VV", "VH"],
        "sar:frequency_band": "C", "sar:center_frequency": 5.405, "sar:looks_equivalent_number": 4.0,
        "sar:observation_direction": "right", "sat:orbit_state": "ascending",
        "sat:absolute_orbit": absolute, "sat:relative_orbit": (absolute - 73) % 175 + 1,
        "proj:epsg": UTM_EPSG, "proj:code": f"EPSG:{UTM_EPSG}",
    }
    when = datetime.combine(day, S1_TIME, tzinfo=timezone.utc)
    return stac.make_item(item_id, mapping(footprint), list(footprint.bounds), when, props, assets, ("raster", "sar", "sat"))


def _dem_item(root: Path, grid: SceneGrid, elevation: np.ndarray, footprint: Polygon) -> pystac.Item:
    """Write the geographic DEM COG and return its item."""
    dem, t = sample_dem(grid, elevation, footprint.bounds)
    href = root / COLLECTIONS[2] / DEM_ID / f"{DEM_ID}.tif"
    stac.write_cog(href, dem, t, 4326, -32767.0)
    rows, cols = dem.shape
    outline = box(t.c, t.f + rows * t.e, t.c + cols * t.a, t.f)
    props = {"platform": "TanDEM-X", "gsd": 30.0, "proj:epsg": 4326, "proj:code": "EPSG:4326"}
    when = datetime(2021, 4, 22, tzinfo=timezone.utc)
    return stac.make_item(DEM_ID, mapping(outline), list(outline.bounds), when, props, {"data": stac.dem_asset(href, dem.shape, t)}, ("raster",))


def generate_demo_catalog(root: Path, *, size_px: int = 512, seed: int = 0, aoi_name: str = "demo-tienshan") -> DemoCatalog:
    """Generate the demo catalog and its truth under ``root`` (created if missing; earlier output replaced).

    Args:
        root: Output folder.
        size_px: Scene width and height in 10 m pixels (>= 256; 256 px drops no required lake).
        seed: Seed of every random choice; the same arguments give the same bytes.
        aoi_name: ``name`` property of the AOI feature.

    Returns:
        The paths and S2 dates of what was written.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _clear_previous(root)
    n_dates = len(S2_SCHEDULE)
    grid = make_grid(size_px)
    terrain = build_terrain(grid, seed)
    lakes = select_lakes(grid, place_lakes(grid, lake_specs(n_dates), seed), terrain.glacier)
    elevation, levels = carve_lakes(grid, terrain.elevation, lakes)
    land = build_landscape(grid, terrain, elevation, lakes, seed)
    footprint = _footprint(grid)
    s1_for = {index: day for day, index in S1_SCHEDULE}

    s2_items, s1_items, truth, date_rows = [], [], [], []
    for i, (day, platform, baseline) in enumerate(S2_SCHEDULE):
        scene = render_date(land, i, n_dates, datetime.combine(day, S2_TIME, tzinfo=timezone.utc))
        s2_items.append(_s2_item(root, grid, scene, day, platform, baseline, footprint))
        truth += lake_features(lakes, i, day, np.isin(scene.scl, CLOUD_SCL), scene.water, levels)
        s1_day = s1_for.get(i)
        if s1_day is not None:
            s1_items.append(_s1_item(root, land, scene, i, s1_day, footprint))
        scl20 = scl_to_20m(scene.scl, grid)
        date_rows.append({
            "date": day.isoformat(), "s2_item_id": s2_items[-1].id, "platform": platform,
            "processing_baseline": baseline, "boa_add_offset": -baseline_offset(baseline),
            "has_s1_pair": s1_day is not None, "s1_item_id": s1_items[-1].id if s1_day else None,
            "s1_date": s1_day.isoformat() if s1_day else None,
            "nearest_s1_days": min(abs((d - day).days) for d, _ in S1_SCHEDULE),
            "cloud_fraction": round(float(np.isin(scl20, CLOUD_SCL).mean()), 6),
        })

    collections = [
        stac.make_collection(COLLECTIONS[0], "Sentinel-2 L2A surface reflectance, per-band COGs (demo).", s2_items),
        stac.make_collection(COLLECTIONS[1], "Sentinel-1 IW GRD, geocoded sigma0 in linear power (demo).", s1_items),
        stac.make_collection(COLLECTIONS[2], "Copernicus DEM GLO-30 (demo).", [_dem_item(root, grid, elevation, footprint)]),
    ]
    catalog_path = stac.save_catalog(root, f"{aoi_name}-catalog", f"Demo acquisitions over {aoi_name}.", collections)

    aoi_path = root / "aoi.geojson"
    # 20 m inside the imagery, so a grid snapped outwards from the AOI still lies on the data.
    aoi: dict[str, Any] = {"type": "Feature", "properties": {"name": aoi_name}, "geometry": mapping(_footprint(grid, inset_m=20.0))}
    write_geojson(aoi_path, [aoi])
    write_geojson(root / "glaciers.geojson", glacier_features(grid, terrain.glacier))
    truth_path = root / "truth" / "truth.geojson"
    write_geojson(truth_path, truth)
    write_json(root / "truth" / "truth.json", {
        "aoi_name": aoi_name, "seed": seed, "size_px": size_px, "crs": f"EPSG:{UTM_EPSG}",
        "scene_transform": list(grid.transform(grid.res))[:6], "scene_bounds": list(grid.bounds),
        "min_mappable_m2": MIN_MAPPABLE_M2, "cloud_scl_classes": list(CLOUD_SCL),
        "lakes": [{"name": lk.name, "level_m": levels[lk.name], "required": lk.spec.required} for lk in lakes],
        "dates": date_rows,
    })
    return DemoCatalog(root, catalog_path, aoi_path, truth_path, tuple(d for d, _, _ in S2_SCHEDULE))


@task(name="generate-demo-catalog")
def generate_demo_catalog_task(root: str, size_px: int = 512, seed: int = 0, aoi_name: str = "demo-tienshan") -> DemoCatalog:
    """Prefect wrapper of :func:`generate_demo_catalog` (rerunning rewrites the same bytes)."""
    return generate_demo_catalog(Path(root), size_px=size_px, seed=seed, aoi_name=aoi_name)
