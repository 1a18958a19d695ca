"""The UTM zone partition of an AOI (tasks.zones): parts, grids, ownership, footprints, caps.

Guards: an AOI across 72° E becomes two parts (EPSG:32642 / 32643) whose grids reach the margin
beyond the seam; a one-zone AOI is one part with exactly today's grid, key and parameters (so
committed scenes are not reprocessed); every lake and every piece of footprint is decided by one
part only; a lake cut by the margin is dropped; the grid cap holds per part and in total.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import MultiPolygon, Point, box

from core.errors import AoiError, SettingsError
from db.geometry import to_lonlat
from db.records import ObservedLake
from flows.aoi import load_aoi
from flows.settings import load_settings
from tasks.grid import MAX_GRID_PIXELS, grid_for_geometry, utm_epsg_for
from tasks.zones import ZONE_MARGIN_M, partition_aoi, restrict_to_part, zone_band, zone_number

SEAM = 72.0
"""Between UTM zones 42 and 43."""
ACROSS = box(71.95, 43.0, 72.05, 43.05)
"""An AOI of about 8 × 5.5 km across the seam, Tien Shan latitudes."""


def _utm(epsg: int, lon: float, lat: float) -> tuple[float, float]:
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    return float(x), float(y)


def _lake(epsg: int, lon: float, lat: float, radius_m: float) -> ObservedLake:
    """A disc lake in ``epsg`` metres centred at (lon, lat)."""
    outline = Point(*_utm(epsg, lon, lat)).buffer(radius_m, quad_segs=16)
    return ObservedLake(MultiPolygon([outline]), outline.area, outline.length, lon, lat, 3500.0, 0.9, utm_epsg=epsg)


def test_zone_numbers_follow_the_standard_bands() -> None:
    assert zone_number(71.999) == 42 and zone_number(72.0) == 43 and zone_number(180.0) == 60
    assert zone_number(-180.0) == 1 and zone_band(43) == (72.0, 78.0)
    assert all(utm_epsg_for(lon, 10.0) == 32600 + zone_number(lon) for lon in np.linspace(-180, 180, 721))


def test_aoi_across_72e_is_two_parts_with_grids_past_the_seam() -> None:
    partition = partition_aoi(ACROSS)
    west, east = partition.parts
    assert (west.epsg, east.epsg) == (32642, 32643) and not partition.single
    assert west.outline.bounds == pytest.approx((71.95, 43.0, 72.0, 43.05))
    assert east.outline.bounds == pytest.approx((72.0, 43.0, 72.05, 43.05))
    assert west.outline.union(east.outline).symmetric_difference(ACROSS).area < 1e-12
    # The ground is split at the seam, a point on it going east; the outer parts own all beyond.
    assert (west.west, west.east, east.west, east.east) == (-math.inf, SEAM, SEAM, math.inf)
    assert east.owns(SEAM) and not west.owns(SEAM) and west.owns(SEAM - 1e-9)
    for part, beyond in ((west, SEAM + 0.98 * ZONE_MARGIN_M), (east, SEAM - 0.98 * ZONE_MARGIN_M)):
        left, bottom, right, top = part.grid.bounds
        assert all(v % 10 == 0 for v in part.grid.bounds) and part.grid.resolution == 10.0
        for lat in (43.0, 43.025, 43.05):
            # The seam and a point 98 % of the margin past it (metres along the parallel, in the
            # part's own CRS) are on the grid, all along the AOI's latitudes.
            xs, ys = _utm(part.epsg, SEAM, lat)
            sign = 1.0 if part is west else -1.0
            x = xs + sign * 0.98 * ZONE_MARGIN_M
            assert left <= x <= right and bottom <= ys <= top, (part.label, lat, beyond)
        # …and not much further: the grid stops at the margin (plus its tilt against the meridian).
        far = _utm(part.epsg, SEAM + (0.03 if part is west else -0.03), 43.025)  # ~2.4 km past
        assert not (left <= far[0] <= right)
    # Outer edges are the AOI's own, as for a one-zone AOI.
    assert west.grid.bounds[0] == grid_for_geometry(ACROSS, 32642).bounds[0]


def test_one_zone_aoi_is_one_part_with_todays_grid_key_and_parameters() -> None:
    """The grid of tests/unit/test_preprocess.py's AOI, and the demo's: unchanged, so are keys."""
    for aoi in (box(77.01, 43.02, 77.06, 43.05), box(76.9, 42.9, 77.3, 43.2), box(-70.6, -33.5, -70.4, -33.3)):
        partition = partition_aoi(aoi)
        (part,) = partition.parts
        c = aoi.centroid
        today = grid_for_geometry(aoi, utm_epsg_for(c.x, c.y))
        assert partition.single and part.grid == today and part.epsg == today.epsg
        assert partition.grid_param() == [today.epsg, *today.transform, today.width, today.height]
        params = {"threshold": 0.5, "min_area_m2": 5000.0, "grid": partition.grid_param()}
        assert partition.key_params(params, part) == params
        lakes = [_lake(part.epsg, c.x, c.y, 100.0)]
        kept = restrict_to_part(lakes, None, part, partition)
        assert kept.lakes == tuple(lakes) and kept.others == kept.cut == 0


def test_aoi_touching_a_seam_or_across_the_equator_is_not_split() -> None:
    touching = partition_aoi(box(71.9, 43.0, 72.0, 43.05))
    assert touching.single and touching.parts[0].epsg == 32642
    equator = partition_aoi(box(77.0, -0.02, 77.05, 0.03))
    assert equator.single and equator.parts[0].epsg == 32643  # the centroid is north


def test_parts_share_one_parameter_set_but_not_one_key() -> None:
    partition = partition_aoi(ACROSS)
    params = {"threshold": 0.5, "grid": partition.grid_param()}
    grids = partition.grid_param()
    assert isinstance(grids, list) and [g[0] for g in grids] == [32642, 32643]  # type: ignore[index]
    keyed = [partition.key_params(params, p) for p in partition.parts]
    assert keyed[0] != keyed[1] and all(k["grid"] == grids for k in keyed)


def test_each_lake_is_kept_by_exactly_one_part() -> None:
    partition = partition_aoi(ACROSS)
    sites = {
        "west": (71.97, 43.02, 150.0),
        "east": (72.03, 43.02, 150.0),
        "straddling": (SEAM + 0.0004, 43.03, 200.0),  # centre 33 m east of the seam
        "near seam, west": (SEAM - 0.004, 43.01, 120.0),  # ~320 m west: on both grids
    }
    kept: dict[str, list[int]] = {name: [] for name in sites}
    for part in partition.parts:
        lakes = [_lake(part.epsg, *site) for site in sites.values()]
        result = restrict_to_part(lakes, None, part, partition)
        for name, lake in zip(sites, lakes, strict=True):
            if lake in result.lakes:
                kept[name].append(part.epsg)
        assert result.others == len(lakes) - len(result.lakes) and result.cut == 0
    assert kept == {"west": [32642], "east": [32643], "straddling": [32643], "near seam, west": [32642]}


def test_a_lake_cut_by_the_margin_is_dropped_and_one_cut_by_the_aoi_edge_kept() -> None:
    partition = partition_aoi(ACROSS)
    west = partition.parts[0]
    grid_box = box(*west.grid.bounds)
    # 3.2 km across, centred 300 m west of the seam: it reaches 1.3 km past the seam, so the
    # west part's grid (1 km margin) cuts it on its east edge.
    big = _lake(32642, SEAM - 0.0037, 43.025, 1600.0)
    cut_outline = big.geometry.intersection(grid_box)
    assert cut_outline.area < big.area_m2
    cut = ObservedLake(MultiPolygon([cut_outline]), cut_outline.area, 0.0, 0, 0, None, 0.9, utm_epsg=32642)
    # A lake on the AOI's (and grid's) west edge: cut by the AOI, as in a one-zone AOI, and kept.
    x0 = west.grid.bounds[0]
    _, y = _utm(32642, 71.97, 43.025)
    edge = box(x0, y - 100, x0 + 200, y + 100)
    on_edge = ObservedLake(MultiPolygon([edge]), edge.area, edge.length, 0, 0, None, 0.9, utm_epsg=32642)
    result = restrict_to_part([cut, on_edge], None, west, partition)
    assert result.lakes == (on_edge,) and result.cut == 1 and result.others == 0


def test_footprints_are_clipped_to_the_owned_ground_exactly() -> None:
    """Each part's footprint stops at the seam: together they tile the AOI, overlapping nowhere."""
    partition = partition_aoi(ACROSS)
    clipped = []
    for part in partition.parts:
        whole = MultiPolygon([box(*part.grid.bounds)])  # the part saw its whole grid dry
        result = restrict_to_part([], whole, part, partition)
        assert result.footprint is not None and result.footprint.is_valid
        (lonlat,) = to_lonlat([result.footprint], part.epsg)
        assert lonlat is not None
        clipped.append(lonlat)
        lons = shapely.get_coordinates(lonlat)[:, 0]
        assert (lons >= SEAM - 1e-9).all() if part.epsg == 32643 else (lons <= SEAM + 1e-9).all()
    west, east = clipped
    assert west.intersection(east).area < 1e-12, "two parts may mark one place absent"
    assert ACROSS.difference(west.union(east)).area < 1e-10, "a place of the AOI no part may decide"
    assert restrict_to_part([], None, partition.parts[0], partition).footprint is None


def test_grid_cap_applies_per_part_and_in_total() -> None:
    partition = partition_aoi(ACROSS)
    sizes = [p.grid.width * p.grid.height for p in partition.parts]
    with pytest.raises(AoiError, match=r"2 grids .* in total, over the .* split it"):
        partition_aoi(ACROSS, max_pixels=sum(sizes) - 1)
    with pytest.raises(AoiError, match=r"AOI part in UTM zone 4[23] \(EPSG:3264[23]\) needs a .* px grid"):
        partition_aoi(ACROSS, max_pixels=min(sizes) - 1)
    assert partition_aoi(ACROSS, max_pixels=sum(sizes)).total_pixels == sum(sizes)


def test_aoi_file_across_zones_over_the_total_cap_is_refused(tmp_path: Path) -> None:
    """1.6° × 1.15° at 43° N across 72° E: each part's grid is under the cap, their total is not."""
    ring = [[71.2, 43.0], [72.8, 43.0], [72.8, 44.15], [71.2, 44.15], [71.2, 43.0]]
    aoi = shapely.Polygon(ring)
    with pytest.raises(AoiError, match="in total"):
        partition_aoi(aoi)
    parts = [grid_for_geometry(aoi.intersection(box(w, 40, w + 6, 50)), 32600 + z) for w, z in ((66, 42), (72, 43))]
    assert all(g.width * g.height < MAX_GRID_PIXELS for g in parts)
    path = tmp_path / "across.geojson"
    path.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    with pytest.raises(AoiError, match=r"^AOI .*across\.geojson: geometry: AOI across UTM zones needs 2 grids"):
        load_aoi(path)


def test_zone_margin_is_a_bounded_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="zone margin 50 m: must be in \\[100, 20000\\]"):
        partition_aoi(ACROSS, margin_m=50)
    monkeypatch.setenv("GLACIAL_LAKES_ZONE_MARGIN_M", "25000")
    with pytest.raises(SettingsError, match=r"^GLACIAL_LAKES_ZONE_MARGIN_M='25000': must be in \[100, 20000\]"):
        load_settings()
    monkeypatch.setenv("GLACIAL_LAKES_ZONE_MARGIN_M", "2000")
    assert load_settings().zone_margin_m == 2000.0
    wide = partition_aoi(ACROSS, margin_m=2000)
    assert all(w.grid.width > n.grid.width for w, n in zip(wide.parts, partition_aoi(ACROSS).parts, strict=True))


def test_a_tile_of_one_zone_reaches_only_its_part() -> None:
    """An S2 tile ending short of the seam reaches one part only (the other part's scene is skipped)."""
    west, east = partition_aoi(ACROSS).parts
    tile_west = box(70.5, 42.5, 71.99, 43.5)
    assert west.reached_by(tile_west) and not east.reached_by(tile_west)
    assert west.reached_by(None) and east.reached_by(None), "a product without a footprint is read everywhere"


def test_a_small_aoi_is_processed_on_a_grid_with_context_about_it() -> None:
    """An 80 m AOI gets a MIN_GRID_SIDE_PX square grid centred on it; a larger AOI keeps its own bounds."""
    from models.inference import InferenceParams
    from tasks.grid import MIN_GRID_SIDE_PX, project_lonlat

    # Change together: the grid's least side holds a whole model window with a margin.
    assert MIN_GRID_SIDE_PX >= InferenceParams().window + 2 * 16
    small = box(77.1, 43.1, 77.101, 43.1007)  # about 80 m × 80 m
    [part] = partition_aoi(small).parts
    grid = part.grid
    assert (grid.width, grid.height) == (MIN_GRID_SIDE_PX, MIN_GRID_SIDE_PX)
    aoi_m = project_lonlat(small, part.epsg)
    left, bottom, right, top = grid.bounds
    assert box(*grid.bounds).contains(aoi_m)
    cx, cy = aoi_m.centroid.x, aoi_m.centroid.y
    assert abs((left + right) / 2 - cx) <= grid.resolution and abs((bottom + top) / 2 - cy) <= grid.resolution
    assert left % grid.resolution == 0 and top % grid.resolution == 0  # still on the shared 10 m lattice
    large = box(77.1, 43.1, 77.2, 43.15)  # about 8 km × 5.5 km: its own bounds
    assert partition_aoi(large).parts[0].grid == grid_for_geometry(large, utm_epsg_for(77.15, 43.125))
