"""Writers of the demo acquisitions: S2 L2A band COGs, S1 GRD sigma0 COGs and the DEM, with their items.

Each writer renders (or takes) one acquisition, writes its COGs under ``root/<collection>/<item id>/``
and returns the STAC item with absolute asset hrefs (made relative when the catalog is saved).
"""

from __future__ import annotations

import zlib
from datetime import UTC, date, datetime, time
from pathlib import Path

import numpy as np
import pystac
from numpy.typing import NDArray
from shapely.geometry import Polygon, box, mapping

from demo.synthetic import stac
from demo.synthetic.dem import sample_dem
from demo.synthetic.scene import BAND_RES_M, BANDS, DateScene, Landscape, render_s1, scl_to_20m, to_native
from demo.synthetic.terrain import UTM_EPSG, SceneGrid

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
S1_SWATH_EDGE_INDEX = 2
"""The S1 scene paired with this S2 date index has a no-data (NaN) strip along its west edge."""
MGRS_TILE = "43TGH"
CLOUD_SCL = (3, 8, 9, 10)
"""SCL classes the pipeline masks: cloud shadow, cloud medium / high probability, thin cirrus."""
COLLECTIONS = ("sentinel-2-l2a", "sentinel-1-grd", "cop-dem-glo-30")
DEM_ID = "Copernicus_DSM_COG_10_N43_00_E077_00_DEM"


def baseline_offset(baseline: str) -> int:
    """BOA_ADD_OFFSET magnitude in DN: 1000 from processing baseline 04.00 on, else 0."""
    return 1000 if tuple(int(p) for p in baseline.split(".")) >= (4, 0) else 0


def write_s2_item(
    root: Path, grid: SceneGrid, scene: DateScene, day: date, platform: str, baseline: str, footprint: Polygon
) -> pystac.Item:
    """Write one S2 L2A acquisition's band COGs and return its item."""
    stamp = f"{day:%Y%m%d}T055641"
    item_id = (
        f"S2{platform[-1].upper()}_MSIL2A_{stamp}_N{baseline.replace('.', '')}_R019_T{MGRS_TILE}_{day:%Y%m%d}T093512"
    )
    folder = root / COLLECTIONS[0] / item_id
    offset = baseline_offset(baseline)
    assets = {}
    for b, band in enumerate(BANDS):
        res = BAND_RES_M[band]
        refl = to_native(scene.reflectance[b : b + 1], grid, res)[0]
        dn = np.clip(np.rint(refl * 10000) + offset, 1, 65535).astype(np.uint16)  # 0 is nodata
        href = folder / f"T{MGRS_TILE}_{stamp}_{band}_{res}m.tif"
        stac.write_cog(href, dn, grid.transform(res), UTM_EPSG, 0)
        assets[band] = stac.s2_asset(href, band, res, dn.shape, grid.transform(res), offset)
    scl = scl_to_20m(scene.scl, grid)
    href = folder / f"T{MGRS_TILE}_{stamp}_SCL_20m.tif"
    stac.write_cog(href, scl, grid.transform(20), UTM_EPSG, 0)
    assets["SCL"] = stac.s2_asset(href, "SCL", 20, scl.shape, grid.transform(20), 0)

    def share(classes: tuple[int, ...]) -> float:
        return round(float(np.isin(scl, classes).mean()) * 100, 4)

    props = {
        "platform": platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "gsd": 10.0,
        "eo:cloud_cover": share((8, 9, 10)),
        "proj:epsg": UTM_EPSG,
        "proj:code": f"EPSG:{UTM_EPSG}",
        "s2:processing_baseline": baseline,
        "s2:mgrs_tile": MGRS_TILE,
        "s2:product_type": "S2MSI2A",
        "s2:boa_add_offset": -offset,
        "s2:snow_ice_percentage": share((11,)),
        "s2:water_percentage": share((6,)),
        "s2:cloud_shadow_percentage": share((3,)),
        "s2:dark_features_percentage": share((2,)),
        "s2:mean_solar_zenith": round(90 - scene.sun_elevation, 3),
        "s2:mean_solar_azimuth": round(scene.sun_azimuth, 3),
        "sat:orbit_state": "descending",
        "sat:relative_orbit": 19,
    }
    when = datetime.combine(day, S2_TIME, tzinfo=UTC)
    return stac.make_item(
        item_id, mapping(footprint), list(footprint.bounds), when, props, assets, ("eo", "raster", "sat")
    )


def write_s1_item(
    root: Path, land: Landscape, scene: DateScene, index: int, day: date, footprint: Polygon
) -> pystac.Item:
    """Write one S1 GRD acquisition (seeing the lakes of S2 date ``index``) and return its item."""
    absolute = 54623 + round((day - date(2024, 7, 6)).days * 175 / 12)  # S1A: 175 orbits per 12 days
    uid = zlib.crc32(day.isoformat().encode()) & 0xFFFF
    datatake = absolute * 7 % 0xFFFFFF  # any stable 6-hex-digit id will do
    item_id = f"S1A_IW_GRDH_1SDV_{day:%Y%m%d}T125231_{day:%Y%m%d}T125256_{absolute:06d}_{datatake:06X}_{uid:04X}"
    grid = land.grid
    vv, vh = render_s1(land, scene.surface, index)
    if index == S1_SWATH_EDGE_INDEX:
        # The swath's near-range edge clips the scene's west side: 40-160 m of NaN, never over a lake.
        rows, cols = np.indices(vv.shape)
        outside = cols < 2 + 6 * rows / vv.shape[0]
        vv[outside] = vh[outside] = np.nan
    assets = {}
    for pol, arr in (("vv", vv), ("vh", vh)):
        href = root / COLLECTIONS[1] / item_id / f"iw-{pol}.tif"
        stac.write_cog(href, arr, grid.transform(20), UTM_EPSG, float("nan"))
        assets[pol] = stac.s1_asset(href, pol, arr.shape, grid.transform(20))
    props = {
        "platform": "sentinel-1a",
        "constellation": "sentinel-1",
        "instruments": ["c-sar"],
        "sar:instrument_mode": "IW",
        "sar:product_type": "GRD",
        "sar:polarizations": ["VV", "VH"],
        "sar:frequency_band": "C",
        "sar:center_frequency": 5.405,
        "sar:looks_equivalent_number": 4.0,
        "sar:observation_direction": "right",
        "sat:orbit_state": "ascending",
        "sat:absolute_orbit": absolute,
        "sat:relative_orbit": (absolute - 73) % 175 + 1,
        "proj:epsg": UTM_EPSG,
        "proj:code": f"EPSG:{UTM_EPSG}",
    }
    when = datetime.combine(day, S1_TIME, tzinfo=UTC)
    return stac.make_item(
        item_id, mapping(footprint), list(footprint.bounds), when, props, assets, ("raster", "sar", "sat")
    )


def write_dem_item(root: Path, grid: SceneGrid, elevation: NDArray[np.float64], footprint: Polygon) -> pystac.Item:
    """Write the geographic DEM COG and return its item."""
    dem, t = sample_dem(grid, elevation, footprint.bounds)
    href = root / COLLECTIONS[2] / DEM_ID / f"{DEM_ID}.tif"
    stac.write_cog(href, dem, t, 4326, -32767.0)
    rows, cols = dem.shape
    outline = box(t.c, t.f + rows * t.e, t.c + cols * t.a, t.f)
    props = {"platform": "TanDEM-X", "gsd": 30.0, "proj:epsg": 4326, "proj:code": "EPSG:4326"}
    when = datetime(2021, 4, 22, tzinfo=UTC)
    return stac.make_item(
        DEM_ID,
        mapping(outline),
        list(outline.bounds),
        when,
        props,
        {"data": stac.dem_asset(href, dem.shape, t)},
        ("raster",),
    )
