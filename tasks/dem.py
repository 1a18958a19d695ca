"""The DEM of a scene from one or several tiles (Copernicus GLO-30: 1° × 1° COGs in EPSG:4326).

An AOI across a tile edge needs several tiles. They are joined into one virtual mosaic (a GDAL
VRT in the tiles' own CRS and resolution, so aligned tiles are copied pixel for pixel, not
resampled) and that mosaic is warped onto the scene grid in one pass, bilinear. The bilinear
kernel therefore reads across a tile edge as inside one tile: the edge leaves no seam. Where no
tile has data the result is NaN, never 0.

A single tile takes :func:`tasks.preprocess.read_dem` unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.etree import ElementTree as ET

import numpy as np
from numpy.typing import NDArray

from core.errors import RasterInputError
from tasks.grid import GridSpec
from tasks.preprocess import _gdal_env, _is_remote, _read_failure, open_raster, read_dem
from tasks.read_errors import NoPixelOnGrid

__all__ = ["DemTile", "mosaic_vrt", "read_dem_tiles"]

_ALIGNED_PX = 1e-6
"""Offsets within this many pixels of a whole number are whole: aligned tiles are copied, not resampled."""


@dataclass(frozen=True)
class DemTile:
    """What the mosaic needs of one tile: where it is, its grid and its nodata.

    Attributes:
        href: The tile as the catalog named it (path or URL).
        crs_wkt: The tile's CRS (WKT).
        transform: North-up affine ``(a, b, c, d, e, f)`` of pixel corners in CRS units (degrees
            for GLO-30).
        width: Columns.
        height: Rows.
        nodata: Value that means "no data" in the file (the tag, or the caller's override); NaN
            for float tiles without a tag; None for integer tiles without one (every value is data).
    """

    href: str
    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    nodata: float | None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in CRS units."""
        a, _, c, _, e, f = self.transform
        return c, f + e * self.height, c + a * self.width, f


def _gdal_path(href: str) -> str:
    """The name GDAL opens inside a VRT: ``/vsicurl/`` for http(s), ``/vsis3/`` for s3, else the path."""
    if href.startswith(("http://", "https://")):
        return f"/vsicurl/{href}"
    if href.startswith("s3://"):
        return f"/vsis3/{href.removeprefix('s3://')}"
    return href


def _open_tile(href: str, nodata: float | None) -> DemTile:
    """Reads one tile's georeference (not its pixels).

    Raises:
        RasterInputError: unreadable (local), not georeferenced, rotated, or not one band.
        OSError: a remote read failed.
    """
    with open_raster(href) as ds:
        if ds.crs is None:
            raise RasterInputError(f"{href}: DEM tile is not georeferenced (no CRS)")
        t = ds.transform
        if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
            raise RasterInputError(f"{href}: DEM tile is not north-up (transform {tuple(t)[:6]})")
        tag = ds.nodata if nodata is None else nodata
        if tag is None and np.dtype(ds.dtypes[0]).kind == "f":
            tag = math.nan
        return DemTile(href, ds.crs.to_wkt(), tuple(t)[:6], ds.width, ds.height, tag)


def mosaic_vrt(tiles: Sequence[DemTile]) -> str:
    """A GDAL VRT (XML text) joining ``tiles`` on one grid in their CRS; float32, NaN nodata.

    The grid has the finest resolution among the tiles and spans their union. A tile on that
    lattice is placed pixel for pixel; a coarser or offset one is resampled bilinearly into it
    (GDAL's per-source resampling), the only case with a second interpolation. Later tiles
    overwrite earlier ones where both have data; pixels of no tile are NaN.

    Raises:
        RasterInputError: the tiles are in different CRSs (named).
    """
    if not tiles:
        raise ValueError("a DEM mosaic needs at least one tile")
    first = tiles[0]
    for tile in tiles[1:]:
        if tile.crs_wkt != first.crs_wkt:
            raise RasterInputError(f"DEM tiles {first.href} and {tile.href} are in different CRSs; cannot mosaic")
    res_x = min(t.transform[0] for t in tiles)
    res_y = min(-t.transform[4] for t in tiles)
    left = min(t.bounds[0] for t in tiles)
    top = max(t.bounds[3] for t in tiles)
    width = math.ceil(_snap((max(t.bounds[2] for t in tiles) - left) / res_x))
    height = math.ceil(_snap((top - min(t.bounds[1] for t in tiles)) / res_y))

    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS").text = first.crs_wkt
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(v) for v in (left, res_x, 0.0, top, 0.0, -res_y))
    band = ET.SubElement(root, "VRTRasterBand", dataType="Float32", band="1")
    ET.SubElement(band, "NoDataValue").text = "nan"
    for tile in tiles:
        a, _, c, _, e, f = tile.transform
        source = ET.SubElement(band, "ComplexSource", resampling="bilinear")
        ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = _gdal_path(tile.href)
        ET.SubElement(source, "SourceBand").text = "1"
        ET.SubElement(source, "SrcRect", xOff="0", yOff="0", xSize=str(tile.width), ySize=str(tile.height))
        dst = {
            "xOff": _snap((c - left) / res_x),
            "yOff": _snap((top - f) / res_y),
            "xSize": _snap(tile.width * a / res_x),
            "ySize": _snap(tile.height * -e / res_y),
        }
        ET.SubElement(source, "DstRect", {k: repr(v) for k, v in dst.items()})
        if tile.nodata is not None:
            ET.SubElement(source, "NODATA").text = repr(float(tile.nodata))
    return ET.tostring(root, encoding="unicode")


def _snap(value: float) -> float:
    """``value`` rounded to a whole number when it is one up to float error (aligned tiles)."""
    nearest = round(value)
    return float(nearest) if abs(value - nearest) < _ALIGNED_PX else value


def read_dem_tiles(hrefs: Sequence[str], grid: GridSpec, *, nodata: float | None = None) -> NDArray[np.float32]:
    """Reads the DEM of a scene from its tiles onto ``grid``: one mosaic, one bilinear warp.

    Args:
        hrefs: DEM tiles (paths or URLs), metres, any one CRS (GLO-30: EPSG:4326), in the plan's
            order (later tiles win where tiles overlap with data).
        grid: Target grid (UTM, metres).
        nodata: Overrides every tile's nodata tag (for files that lack one).

    Returns:
        float32 ``(H, W)`` metres, NaN where no tile has data (a gap between tiles included).

    Raises:
        RasterInputError: a tile is unusable (named), the tiles' CRSs differ, or the mosaic
            leaves no valid pixel on the grid (every tile named). OSError: a remote read failed.
    """
    if not hrefs:
        raise ValueError("read_dem_tiles needs at least one DEM tile")
    if len(hrefs) == 1:
        return read_dem(hrefs[0], grid, nodata=nodata)
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.io import MemoryFile
    from rasterio.warp import reproject

    tiles = [_open_tile(href, nodata) for href in hrefs]
    names = ", ".join(hrefs)
    dst = np.full(grid.shape, np.nan, dtype=np.float32)
    # The first remote tile's timeouts apply to every read of the mosaic (they are the same figures).
    env_href = next((h for h in hrefs if _is_remote(h)), hrefs[0])
    with _gdal_env(env_href), MemoryFile(mosaic_vrt(tiles).encode(), ext=".vrt") as mem, mem.open() as vrt:
        try:
            reproject(
                source=rasterio.band(vrt, 1),
                destination=dst,
                src_nodata=np.nan,
                dst_transform=grid.affine,
                dst_crs=grid.crs,
                dst_nodata=np.nan,
                resampling=Resampling.bilinear,
            )
        except Exception as exc:  # GDAL's CPLE_* errors name no tile
            if _is_remote(env_href):
                raise _read_failure(env_href, exc) from None
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
            raise RasterInputError(f"DEM mosaic of {names}: unreadable ({reason})") from None
        if not np.isfinite(dst).any():
            raise NoPixelOnGrid(
                f"DEM mosaic of {names}: no valid pixel on the scene grid (EPSG:{grid.epsg}); the tiles' bounds "
                f"{tuple(round(v, 3) for v in vrt.bounds)} miss the AOI, or they hold only nodata"
            )
    return dst
