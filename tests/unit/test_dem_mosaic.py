"""DEM mosaic across tile edges: several GLO-30-like tiles warped onto the scene grid in one pass.

Tiles are cut from one synthetic DEM in EPSG:4326 (1 arc-second, like GLO-30); the mosaic on a
UTM grid must equal the single-file warp of the uncut DEM (no seam at the edge), a gap between
tiles is NaN (never 0), and bad tiles are named.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

from core.errors import RasterInputError
from tasks.dem import _open_tile, mosaic_vrt, read_dem_tiles
from tasks.grid import GridSpec
from tasks.preprocess import read_dem

EPSG = 32643
STEP = 1 / 3600  # GLO-30: 1 arc-second
LON0, LAT0 = 77.0, 43.0  # a tile corner: the tile edge at lon 77.0 + N·STEP runs through the grid
N = 180  # source pixels per side (180″ = 0.05°)
TO_UTM = Transformer.from_crs(4326, EPSG, always_xy=True)


def _terrain() -> np.ndarray:
    """A rough, non-planar surface (m): bilinear error stays small, but a seam would show."""
    rows, cols = np.indices((N, N), dtype=np.float64)
    return (
        4000.0 + 3.0 * cols - 2.0 * rows + 40.0 * np.sin(cols / 9.0) * np.cos(rows / 13.0) + 0.02 * (cols - 90) ** 2
    ).astype(np.float32)


def _write(path: Path, z: np.ndarray, lon: float, lat: float, nodata: float | None = -32767.0) -> str:
    profile = {
        "driver": "GTiff",
        "width": z.shape[1],
        "height": z.shape[0],
        "count": 1,
        "dtype": "float32",
        "crs": "EPSG:4326",
        "transform": from_origin(lon, lat, STEP, STEP),
        **({"nodata": nodata} if nodata is not None else {}),
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(z[np.newaxis])
    return str(path)


def _grid() -> GridSpec:
    """A 10 m UTM grid inside the synthetic DEM, across its middle (the cut)."""
    x0, y0 = TO_UTM.transform(LON0 + 20 * STEP, LAT0 - 20 * STEP)
    return GridSpec(EPSG, (10.0, 0.0, round(x0), 0.0, -10.0, round(y0)), 300, 300)


def _cut(tmp_path: Path, z: np.ndarray, at: int, *, gap: int = 0, vertical: bool = True) -> list[str]:
    """Two tiles of ``z`` split at column (or row) ``at``; ``gap`` source pixels left out between them."""
    if vertical:
        a = _write(tmp_path / "west.tif", z[:, :at], LON0, LAT0)
        b = _write(tmp_path / "east.tif", z[:, at + gap :], LON0 + (at + gap) * STEP, LAT0)
    else:
        a = _write(tmp_path / "north.tif", z[:at], LON0, LAT0)
        b = _write(tmp_path / "south.tif", z[at + gap :], LON0, LAT0 - (at + gap) * STEP)
    return [a, b]


@pytest.mark.parametrize("vertical", [True, False], ids=["east-west edge", "north-south edge"])
def test_two_tiles_mosaic_back_to_the_uncut_dem(tmp_path: Path, vertical: bool) -> None:
    """Cut one DEM in two; the mosaic on the UTM grid equals the uncut DEM's warp (no seam)."""
    z = _terrain()
    whole = read_dem(_write(tmp_path / "whole.tif", z, LON0, LAT0), _grid())
    mosaic = read_dem_tiles(_cut(tmp_path, z, 90, vertical=vertical), _grid())
    assert mosaic.dtype == np.float32 and mosaic.shape == _grid().shape
    assert np.isfinite(whole).all() and np.isfinite(mosaic).all()
    # Aligned tiles are copied into the mosaic pixel for pixel: the one bilinear warp is the
    # same as the uncut file's (float rounding only).
    np.testing.assert_allclose(mosaic, whole, atol=1e-3)


def test_the_edge_is_seamless_where_tiles_are_warped_one_by_one_it_is_not(tmp_path: Path) -> None:
    """The mosaic is needed: warping tiles one after the other leaves an error band at the edge."""
    z = _terrain()
    grid = _grid()
    whole = read_dem(_write(tmp_path / "whole.tif", z, LON0, LAT0), grid)
    tiles = _cut(tmp_path, z, 90)
    one_by_one = np.where(np.isnan(first := read_dem(tiles[0], grid)), read_dem(tiles[1], grid), first)
    assert float(np.nanmax(np.abs(one_by_one - whole))) > 1.0, "the test's edge must be one a naive warp gets wrong"
    assert float(np.abs(read_dem_tiles(tiles, grid) - whole).max()) < 1e-3


def test_mosaic_matches_the_surface_within_interpolation_error(tmp_path: Path) -> None:
    """At pixel centres the mosaic equals the analytic surface within bilinear error."""
    z = _terrain()
    grid = _grid()
    mosaic = read_dem_tiles(_cut(tmp_path, z, 90), grid)
    to_ll = Transformer.from_crs(EPSG, 4326, always_xy=True)
    rows, cols = np.mgrid[0:300:7, 0:300:7]
    xs, ys = grid.affine @ (cols + 0.5, rows + 0.5)
    lon, lat = to_ll.transform(xs, ys)
    # Source pixel coordinates (centres at .5): the surface is defined on them.
    c, r = (lon - LON0) / STEP - 0.5, (LAT0 - lat) / STEP - 0.5
    truth = 4000.0 + 3.0 * c - 2.0 * r + 40.0 * np.sin(c / 9.0) * np.cos(r / 13.0) + 0.02 * (c - 90) ** 2
    # Bilinear error bound: curvature × h²/8 with h = 1 source pixel (the sine term's 40/81 m/px²).
    assert float(np.abs(mosaic[rows, cols] - truth).max()) < 0.2


def test_a_gap_between_tiles_is_nan_not_zero(tmp_path: Path) -> None:
    """Source pixels no tile covers stay NaN on the grid; the rest is filled from the tiles."""
    z = _terrain()
    grid = _grid()
    mosaic = read_dem_tiles(_cut(tmp_path, z, 80, gap=20), grid)
    assert np.isnan(mosaic).any(), "the gap must show"
    assert not (mosaic == 0).any() and not (mosaic == -32767).any()
    # The gap is a band of whole columns: NaN columns form one run in every row.
    nan_cols = np.flatnonzero(np.isnan(mosaic).any(axis=0))
    assert nan_cols.size and np.all(np.diff(nan_cols) == 1)
    assert np.isfinite(mosaic[:, : nan_cols[0] - 1]).all() and np.isfinite(mosaic[:, nan_cols[-1] + 2 :]).all()


def test_tile_nodata_is_nan_in_the_mosaic_and_later_tiles_fill_overlap(tmp_path: Path) -> None:
    """A tile's nodata (tag −32767) never reaches the grid; an overlapping tile's data does."""
    z = _terrain()
    holed = z.copy()
    holed[:, 60:100] = -32767.0  # west tile has a hole at the edge; the east tile overlaps it
    west = _write(tmp_path / "west.tif", holed[:, :100], LON0, LAT0)
    east = _write(tmp_path / "east.tif", z[:, 60:], LON0 + 60 * STEP, LAT0)
    grid = _grid()
    whole = read_dem(_write(tmp_path / "whole.tif", z, LON0, LAT0), grid)
    for order in ([west, east], [east, west]):
        np.testing.assert_allclose(read_dem_tiles(order, grid), whole, atol=1e-3)


def test_coarser_tile_is_resampled_into_the_finest_lattice(tmp_path: Path) -> None:
    """Tiles of different spacing (GLO-30 changes its longitude spacing with latitude) still mosaic."""
    z = _terrain()
    west = _write(tmp_path / "west.tif", z[:, :90], LON0, LAT0)
    coarse = z[:, 90::2]  # every other column: 2″ spacing east of the edge
    path = tmp_path / "east2.tif"
    profile = {
        "driver": "GTiff",
        "width": coarse.shape[1],
        "height": coarse.shape[0],
        "count": 1,
        "dtype": "float32",
        "crs": "EPSG:4326",
        "transform": from_origin(LON0 + 90 * STEP, LAT0, 2 * STEP, STEP),
        "nodata": -32767.0,
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(coarse[np.newaxis])
    mosaic = read_dem_tiles([west, str(path)], _grid())
    whole = read_dem(_write(tmp_path / "whole.tif", z, LON0, LAT0), _grid())
    assert np.isfinite(mosaic).all()
    assert float(np.abs(mosaic - whole).max()) < 5.0  # the coarser half loses the sine's detail only


def test_vrt_places_aligned_tiles_on_whole_pixels(tmp_path: Path) -> None:
    tiles = [_open_tile(h, None) for h in _cut(tmp_path, _terrain(), 90)]
    xml = mosaic_vrt(tiles)
    assert 'xOff="90.0"' in xml and f'rasterXSize="{N}"' in xml and "<NODATA>-32767.0</NODATA>" in xml


def test_one_tile_is_the_single_file_read(tmp_path: Path) -> None:
    href = _write(tmp_path / "whole.tif", _terrain(), LON0, LAT0)
    np.testing.assert_array_equal(read_dem_tiles([href], _grid()), read_dem(href, _grid()))


def test_bad_tiles_are_named(tmp_path: Path) -> None:
    z = _terrain()
    good = _write(tmp_path / "good.tif", z, LON0, LAT0)
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(RasterInputError, match=r"notes\.tif"):
        read_dem_tiles([good, str(text)], _grid())
    utm = tmp_path / "utm.tif"
    with rasterio.open(
        utm,
        "w",
        driver="GTiff",
        width=8,
        height=8,
        count=1,
        dtype="float32",
        crs=f"EPSG:{EPSG}",
        transform=from_origin(500_000, 4_700_000, 30, 30),
    ) as ds:
        ds.write(np.ones((1, 8, 8), np.float32))
    with pytest.raises(RasterInputError, match="different CRSs"):
        read_dem_tiles([good, str(utm)], _grid())
    far = _write(tmp_path / "far.tif", z, 10.0, 10.0)
    far2 = _write(tmp_path / "far2.tif", z, 10.05, 10.0)
    with pytest.raises(RasterInputError, match=r"far\.tif.*far2\.tif: no valid pixel"):
        read_dem_tiles([far, far2], _grid())


def test_real_glo30_tile_grids_join_pixel_for_pixel(tmp_path: Path, realdata: Path) -> None:
    """Tiles on the grids of two real adjacent GLO-30 items (10″ × 1″ at 89° S) join without resampling."""
    import json

    from rasterio.io import MemoryFile

    items = {d["id"]: d for d in json.loads((realdata / "stac_items" / "cop-dem-glo-30-pc.json").read_text())}
    hrefs = []
    rng = np.random.default_rng(0)
    for name in ("Copernicus_DSM_COG_10_S90_00_W180_00_DEM", "Copernicus_DSM_COG_10_S90_00_W179_00_DEM"):
        props = items[name]["properties"]
        a, _, c, _, e, f = props["proj:transform"]
        rows, cols = 40, props["proj:shape"][1]  # a 40-row strip of the tile, full width
        z = (2800.0 + rng.normal(0, 50, (rows, cols))).astype(np.float32)
        path = tmp_path / f"{name}.tif"
        profile = {
            "driver": "GTiff",
            "width": cols,
            "height": rows,
            "count": 1,
            "dtype": "float32",
            "crs": f"EPSG:{props['proj:epsg']}",
            "transform": rasterio.Affine(a, 0.0, c, 0.0, e, f),
            "nodata": -32767.0,
        }
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(z[np.newaxis])
        hrefs.append(str(path))
    tiles = [_open_tile(h, None) for h in hrefs]
    xml = mosaic_vrt(tiles)
    assert 'xOff="0.0"' in xml and 'xOff="360.0"' in xml, "the east tile starts one tile width on, exactly"
    with MemoryFile(xml.encode(), ext=".vrt") as mem, mem.open() as vrt:
        assert (vrt.width, vrt.height) == (720, 40)
        mosaic = vrt.read(1)
    for i, href in enumerate(hrefs):
        with rasterio.open(href) as ds:
            np.testing.assert_array_equal(mosaic[:, 360 * i : 360 * (i + 1)], ds.read(1))
