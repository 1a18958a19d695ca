"""The demo data generator: a local static STAC catalog over one Tien Shan valley, plus its truth.

``generate_demo_catalog`` writes Sentinel-2 L2A (per-band COGs at native resolution, uint16 DN),
Sentinel-1 GRD (geocoded sigma0, linear, 20 m) and a Copernicus-DEM-like GLO-30 raster (EPSG:4326,
1 arc-second) for 5 summer dates, and the truth lakes per date. Output is deterministic: the same
arguments give the same bytes.
"""

from __future__ import annotations

import json
import shutil
import zlib
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer
from shapely.geometry import Polygon, box, mapping, shape
from shapely.validation import make_valid

from tasks.synthetic import stac
from tasks.synthetic.dem import sample_dem
from tasks.synthetic.lakes import MIN_MAPPABLE_M2, carve_lakes, lake_specs, place_lakes, select_lakes
from tasks.synthetic.scene import BAND_RES_M, BANDS, build_landscape, render_date, render_s1, scl_to_20m, to_native
from tasks.synthetic.terrain import UTM_EPSG, SceneGrid, build_terrain, make_grid

S2_TIME = time(5, 56, 41, 24000)
S2_SCHEDULE = (
    (date(2024, 7, 4), "sentinel-2a", "05.09"),
    (date(2024, 7, 24), "sentinel-2a", "05.09"),
    (date(2024, 8, 18), "sentinel-2b", "02.14"),
    (date(2024, 9, 2), "sentinel-2a", "05.09"),
    (date(2024, 9, 22), "sentinel-2a", "05.09"),
)
"""S2 dates, platform and processing baseline. 02.14 predates the BOA_ADD_OFFSET of 04.00."""
S1_TIME = time(12, 52, 31)
S1_SCHEDULE = ((date(2024, 7, 6), 0), (date(2024, 7, 18), 1), (date(2024, 8, 23), 2), (date(2024, 9, 16), 4))
"""S1 dates and the S2 date index each pairs with; S2 date 4 (2024-09-02) has no S1 within 7 days."""
MGRS_TILE = "43TGH"
CLOUD_SCL = (3, 8, 9, 10)
COLLECTIONS = ("sentinel-2-l2a", "sentinel-1-grd", "cop-dem-glo-30")


@dataclass(frozen=True)
class DemoCatalog:
    """Where the generated demo lives."""

    root: Path
    catalog_path: Path
    """root / "catalog.json"."""
    aoi_path: Path
    """root / "aoi.geojson": one Feature (in a FeatureCollection), Polygon, EPSG:4326."""
    truth_path: Path
    """root / "truth" / "truth.geojson": one feature per lake per S2 date with water, EPSG:4326."""
    dates: tuple[date, ...]
    """S2 acquisition dates."""


def baseline_offset(baseline: str) -> int:
    """BOA_ADD_OFFSET magnitude in DN: 1000 from processing baseline 04.00 on, else 0."""
    return 1000 if tuple(int(p) for p in baseline.split(".")) >= (4, 0) else 0


def _to_wgs84(geom: Any) -> Any:
    tr = Transformer.from_crs(UTM_EPSG, 4326, always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def _footprint(grid: SceneGrid, inset_m: float = 0.0) -> Polygon:
    w, s, e, n = grid.bounds
    poly = box(w + inset_m, s + inset_m, e - inset_m, n - inset_m).segmentize(grid.size_px * grid.res / 8)
    return make_valid(_to_wgs84(poly))


def _s2_ids(d: date, platform: str, baseline: str) -> tuple[str, str]:
    stamp = f"{d:%Y%m%d}T055641"
    item_id = f"S2{platform[-1].upper()}_MSIL2A_{stamp}_N{baseline.replace('.', '')}_R019_T{MGRS_TILE}_{d:%Y%m%d}T093512"
    return item_id, f"T{MGRS_TILE}_{stamp}"


def _s1_id(d: date) -> tuple[str, int, int]:
    absolute = 54623 + round((d - date(2024, 7, 6)).days * 175 / 12)
    uid = zlib.crc32(d.isoformat().encode()) & 0xFFFF
    return (
        f"S1A_IW_GRDH_1SDV_{d:%Y%m%d}T125231_{d:%Y%m%d}T125256_{absolute:06d}_{absolute * 7 % 0xFFFFFF:06X}_{uid:04X}",
        absolute,
        (absolute - 73) % 175 + 1,
    )


def _clear_previous(root: Path) -> None:
    """Remove what an earlier run wrote, so no stale file survives (the root itself is kept)."""
    for name in (*COLLECTIONS, "truth"):
        if (root / name).is_dir():
            shutil.rmtree(root / name)
    for name in ("catalog.json", "aoi.geojson"):
        (root / name).unlink(missing_ok=True)


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")


def generate_demo_catalog(root: Path, *, size_px: int = 512, seed: int = 0, aoi_name: str = "demo-tienshan") -> DemoCatalog:
    """Generate the demo catalog and its truth under ``root`` (created if missing, earlier output replaced).

    Args:
        root: Output folder.
        size_px: Scene width and height in 10 m pixels (>= 256).
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
    geom, bbox = mapping(footprint), list(footprint.bounds)
    m, n = grid.margin_px, size_px
    s1_pairs = {i: d for d, i in S1_SCHEDULE}

    s2_items, s1_items, truth_features, date_rows = [], [], [], []
    for i, (d, platform, baseline) in enumerate(S2_SCHEDULE):
        when = datetime.combine(d, S2_TIME, tzinfo=timezone.utc)
        scene = render_date(land, i, n_dates, when)
        item_id, prefix = _s2_ids(d, platform, baseline)
        folder = root / COLLECTIONS[0] / item_id
        offset = baseline_offset(baseline)
        assets = {}
        for b, band in enumerate(BANDS):
            res = BAND_RES_M[band]
            refl = to_native(scene.reflectance[b: b + 1], grid, res)[0]
            dn = np.clip(np.rint(refl * 10000) + offset, 1, 65535).astype(np.uint16)
            href = folder / f"{prefix}_{band}_{res}m.tif"
            stac.write_cog(href, dn, grid.transform(res), UTM_EPSG, 0)
            assets[band] = stac.s2_asset(href, band, res, dn.shape, grid.transform(res), offset)
        scl20 = scl_to_20m(scene.scl, grid)
        href = folder / f"{prefix}_SCL_20m.tif"
        stac.write_cog(href, scl20, grid.transform(20), UTM_EPSG, 0)
        assets["SCL"] = stac.s2_asset(href, "SCL", 20, scl20.shape, grid.transform(20), 0)

        cloud_fraction = float(np.isin(scl20, CLOUD_SCL).mean())
        props = {
            "platform": platform, "constellation": "sentinel-2", "instruments": ["msi"], "gsd": 10.0,
            "eo:cloud_cover": round(float(np.isin(scl20, (8, 9, 10)).mean()) * 100, 4),
            "proj:epsg": UTM_EPSG, "proj:code": f"EPSG:{UTM_EPSG}",
            "s2:processing_baseline": baseline, "s2:mgrs_tile": MGRS_TILE, "s2:product_type": "S2MSI2A",
            "s2:boa_add_offset": -offset,
            "s2:snow_ice_percentage": round(float((scl20 == 11).mean()) * 100, 4),
            "s2:water_percentage": round(float((scl20 == 6).mean()) * 100, 4),
            "s2:mean_solar_zenith": round(90 - scene.sun_elevation, 3),
            "s2:mean_solar_azimuth": round(scene.sun_azimuth, 3),
            "sat:orbit_state": "descending", "sat:relative_orbit": 19,
        }
        s2_items.append(stac.make_item(item_id, geom, bbox, when, props, assets, ("eo", "proj", "raster", "sat")))

        scl10 = scene.scl[m: m + n, m: m + n]
        masked = np.isin(scl10, CLOUD_SCL)
        for lake in lakes:
            outline = lake.outlines[i]
            if outline is None:
                continue
            visible = not bool(masked[scene.water[lake.name][m: m + n, m: m + n]].any())
            area = round(float(outline.area), 2)
            truth_features.append({
                "type": "Feature",
                "properties": {
                    "lake": lake.name, "date": d.isoformat(), "area_m2": area, "visible": visible,
                    "min_mappable": area >= MIN_MAPPABLE_M2, "level_m": levels[lake.name],
                },
                "geometry": mapping(make_valid(_to_wgs84(outline))),
            })

        s1_date = s1_pairs.get(i)
        s1_id = None
        if s1_date is not None:
            s1_id, absolute, relative = _s1_id(s1_date)
            vv, vh = render_s1(land, scene.surface, i)
            s1_folder = root / COLLECTIONS[1] / s1_id
            s1_assets = {}
            for pol, arr in (("vv", vv), ("vh", vh)):
                href = s1_folder / f"iw-{pol}.tif"
                stac.write_cog(href, arr, grid.transform(20), UTM_EPSG, float("nan"))
                s1_assets[pol] = stac.s1_asset(href, pol, arr.shape, grid.transform(20))
            s1_props = {
                "platform": "sentinel-1a", "constellation": "sentinel-1", "instruments": ["c-sar"],
                "sar:instrument_mode": "IW", "sar:product_type": "GRD", "sar:polarizations": ["VV", "VH"],
                "sar:frequency_band": "C", "sar:center_frequency": 5.405, "sar:looks_equivalent_number": 4.0,
                "sar:observation_direction": "right", "sat:orbit_state": "ascending",
                "sat:absolute_orbit": absolute, "sat:relative_orbit": relative,
                "proj:epsg": UTM_EPSG, "proj:code": f"EPSG:{UTM_EPSG}",
            }
            s1_when = datetime.combine(s1_date, S1_TIME, tzinfo=timezone.utc)
            s1_items.append(stac.make_item(s1_id, geom, bbox, s1_when, s1_props, s1_assets, ("proj", "raster", "sar", "sat")))
        date_rows.append({
            "date": d.isoformat(), "s2_item_id": item_id, "platform": platform, "processing_baseline": baseline,
            "has_s1_pair": s1_date is not None, "s1_item_id": s1_id,
            "s1_date": s1_date.isoformat() if s1_date else None,
            "s1_gap_days": min(abs((s1d - d).days) for s1d, _ in S1_SCHEDULE),
            "cloud_fraction": round(cloud_fraction, 6),
        })

    dem, dem_transform = sample_dem(grid, elevation, footprint.bounds)
    dem_id = "Copernicus_DSM_COG_10_N43_00_E077_00_DEM"
    href = root / COLLECTIONS[2] / dem_id / f"{dem_id}.tif"
    stac.write_cog(href, dem, dem_transform, 4326, -32767.0)
    rows, cols = dem.shape
    dem_box = box(dem_transform.c, dem_transform.f + rows * dem_transform.e, dem_transform.c + cols * dem_transform.a, dem_transform.f)
    dem_props = {"platform": "TanDEM-X", "gsd": 30.0, "proj:epsg": 4326, "proj:code": "EPSG:4326"}
    dem_item = stac.make_item(
        dem_id, mapping(dem_box), list(dem_box.bounds), datetime(2021, 4, 22, tzinfo=timezone.utc),
        dem_props, {"data": stac.dem_asset(href, dem.shape, dem_transform)}, ("proj", "raster"),
    )

    collections = [
        stac.make_collection(COLLECTIONS[0], "Sentinel-2 L2A surface reflectance (demo).", s2_items),
        stac.make_collection(COLLECTIONS[1], "Sentinel-1 IW GRD, geocoded sigma0 (demo).", s1_items),
        stac.make_collection(COLLECTIONS[2], "Copernicus DEM GLO-30 (demo).", [dem_item]),
    ]
    catalog_path = stac.save_catalog(root, f"{aoi_name}-catalog", f"Demo acquisitions over {aoi_name}.", collections)

    aoi_path = root / "aoi.geojson"
    aoi = {"type": "Feature", "properties": {"name": aoi_name}, "geometry": mapping(_footprint(grid, inset_m=20.0))}
    _write_json(aoi_path, {"type": "FeatureCollection", "features": [aoi]})
    truth_path = root / "truth" / "truth.geojson"
    _write_json(truth_path, {"type": "FeatureCollection", "features": truth_features})
    w, s, e, nb = grid.bounds
    _write_json(root / "truth" / "truth.json", {
        "aoi_name": aoi_name, "seed": seed, "size_px": size_px, "crs": f"EPSG:{UTM_EPSG}",
        "scene_transform": list(grid.transform(grid.res))[:6], "scene_bounds": [w, s, e, nb],
        "min_mappable_m2": MIN_MAPPABLE_M2, "cloud_scl_classes": list(CLOUD_SCL),
        "lakes": [{"name": lk.name, "level_m": levels[lk.name], "required": lk.spec.required} for lk in lakes],
        "dates": date_rows,
    })
    return DemoCatalog(root, catalog_path, aoi_path, truth_path, tuple(d for d, _, _ in S2_SCHEDULE))


def load_truth(truth_path: Path) -> gpd.GeoDataFrame:
    """Truth lakes as a GeoDataFrame (EPSG:4326); ``date`` as ``datetime.date``.

    Columns: lake, date, area_m2 (UTM m²), visible, min_mappable, level_m, geometry.
    """
    raw = json.loads(Path(truth_path).read_text())
    rows = [dict(f["properties"]) for f in raw["features"]]
    geoms = [shape(f["geometry"]) for f in raw["features"]]
    columns = ["lake", "date", "area_m2", "visible", "min_mappable", "level_m"]
    frame = gpd.GeoDataFrame(pd.DataFrame(rows, columns=columns), geometry=geoms, crs="EPSG:4326")
    frame["date"] = [date.fromisoformat(v) for v in frame["date"]]
    frame["visible"] = frame["visible"].astype(bool)
    frame["min_mappable"] = frame["min_mappable"].astype(bool)
    return frame
