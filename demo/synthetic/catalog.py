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

import filecmp
import shutil
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from shapely.geometry import Polygon, box, mapping

from demo.synthetic import stac
from demo.synthetic.acquisitions import (
    CLOUD_SCL,
    COLLECTIONS,
    S1_SCHEDULE,
    S2_SCHEDULE,
    S2_TIME,
    baseline_offset,
    write_dem_item,
    write_s1_item,
    write_s2_item,
)
from demo.synthetic.lakes import MIN_MAPPABLE_M2, carve_lakes, clear_ice, lake_specs, place_lakes, select_lakes
from demo.synthetic.scene import build_landscape, render_date, scl_to_20m
from demo.synthetic.terrain import UTM_EPSG, SceneGrid, build_terrain, make_grid
from demo.synthetic.truth import glacier_features, lake_features, load_truth, to_wgs84, write_geojson, write_json

__all__ = ["DemoCatalog", "baseline_offset", "generate_demo_catalog", "load_truth", "refresh_demo_catalog"]


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


def generate_demo_catalog(
    root: Path, *, size_px: int = 512, seed: int = 0, aoi_name: str = "demo-tienshan"
) -> DemoCatalog:
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
    # A glacier-contact lake replaces the ice it sits on (the glacier outlines then touch it).
    terrain = replace(terrain, glacier=clear_ice(grid, terrain.glacier, lakes))
    elevation, levels = carve_lakes(grid, terrain.elevation, lakes)
    land = build_landscape(grid, terrain, elevation, lakes, seed)
    footprint = _footprint(grid)
    s1_for = {index: day for day, index in S1_SCHEDULE}

    s2_items, s1_items, truth, date_rows = [], [], [], []
    for i, (day, platform, baseline) in enumerate(S2_SCHEDULE):
        scene = render_date(land, i, n_dates, datetime.combine(day, S2_TIME, tzinfo=UTC))
        s2_items.append(write_s2_item(root, grid, scene, day, platform, baseline, footprint))
        truth += lake_features(lakes, i, day, np.isin(scene.scl, CLOUD_SCL), scene.water, levels)
        s1_day = s1_for.get(i)
        if s1_day is not None:
            s1_items.append(write_s1_item(root, land, scene, i, s1_day, footprint))
        scl20 = scl_to_20m(scene.scl, grid)
        date_rows.append(
            {
                "date": day.isoformat(),
                "s2_item_id": s2_items[-1].id,
                "platform": platform,
                "processing_baseline": baseline,
                "boa_add_offset": -baseline_offset(baseline),
                "has_s1_pair": s1_day is not None,
                "s1_item_id": s1_items[-1].id if s1_day else None,
                "s1_date": s1_day.isoformat() if s1_day else None,
                "nearest_s1_days": min(abs((d - day).days) for d, _ in S1_SCHEDULE),
                "cloud_fraction": round(float(np.isin(scl20, CLOUD_SCL).mean()), 6),
            }
        )

    collections = [
        stac.make_collection(COLLECTIONS[0], "Sentinel-2 L2A surface reflectance, per-band COGs (demo).", s2_items),
        stac.make_collection(COLLECTIONS[1], "Sentinel-1 IW GRD, geocoded sigma0 in linear power (demo).", s1_items),
        stac.make_collection(
            COLLECTIONS[2], "Copernicus DEM GLO-30 (demo).", [write_dem_item(root, grid, elevation, footprint)]
        ),
    ]
    catalog_path = stac.save_catalog(root, f"{aoi_name}-catalog", f"Demo acquisitions over {aoi_name}.", collections)

    aoi_path = root / "aoi.geojson"
    # 20 m inside the imagery, so a grid snapped outwards from the AOI still lies on the data.
    aoi: dict[str, Any] = {
        "type": "Feature",
        "properties": {"name": aoi_name},
        "geometry": mapping(_footprint(grid, inset_m=20.0)),
    }
    write_geojson(aoi_path, [aoi])
    write_geojson(root / "glaciers.geojson", glacier_features(grid, terrain.glacier))
    truth_path = root / "truth" / "truth.geojson"
    write_geojson(truth_path, truth)
    write_json(
        root / "truth" / "truth.json",
        {
            "aoi_name": aoi_name,
            "seed": seed,
            "size_px": size_px,
            "crs": f"EPSG:{UTM_EPSG}",
            "scene_transform": list(grid.transform(grid.res))[:6],
            "scene_bounds": list(grid.bounds),
            "min_mappable_m2": MIN_MAPPABLE_M2,
            "cloud_scl_classes": list(CLOUD_SCL),
            "lakes": [
                {
                    "name": lk.name,
                    "level_m": levels[lk.name],
                    "required": lk.spec.required,
                    "glacier_contact": lk.spec.glacier_contact,
                }
                for lk in lakes
            ],
            "dates": date_rows,
        },
    )
    return DemoCatalog(root, catalog_path, aoi_path, truth_path, tuple(d for d, _, _ in S2_SCHEDULE))


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def _same_tree(a: Path, b: Path) -> bool:
    """Same file names and the same bytes in every file."""
    names = _files(a)
    return names == _files(b) and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def refresh_demo_catalog(
    root: Path, *, size_px: int = 512, seed: int = 0, aoi_name: str = "demo-tienshan"
) -> DemoCatalog:
    """:func:`generate_demo_catalog` into ``root``, leaving an identical earlier catalog untouched.

    The pipeline fingerprints local inputs by size and modification time (part of each scene's
    ledger key), so rewriting byte-identical files would make a second demo reprocess every scene.
    The catalog is generated into a sibling folder; when it equals what ``root`` holds, the sibling
    is dropped, otherwise it replaces ``root`` (the catalog's hrefs are relative, so it moves whole).
    """
    root = Path(root)
    # No dot in the name: pystac takes a folder name with an extension for a file name.
    staging = root.with_name(f"{root.name}-staging")
    shutil.rmtree(staging, ignore_errors=True)
    fresh = generate_demo_catalog(staging, size_px=size_px, seed=seed, aoi_name=aoi_name)
    if root.is_dir() and _same_tree(root, staging):
        shutil.rmtree(staging)
    else:
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
    return DemoCatalog(
        root,
        root / fresh.catalog_path.relative_to(staging),
        root / fresh.aoi_path.relative_to(staging),
        root / fresh.truth_path.relative_to(staging),
        fresh.dates,
    )
