"""COG writing and STAC item builders for the demo catalog (static, self-contained, relative hrefs).

Items follow the public catalogs' conventions: S2 L2A per-band assets B01…B12 + SCL, S1 ``vv``/``vh``,
DEM ``data``. Items carry ``proj:epsg`` (what the pipeline reads) and ``proj:code`` side by side, and
do not list the projection extension's schema: pystac, reading an item that lists it (any version),
drops ``proj:epsg`` in favour of ``proj:code``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pystac
from numpy.typing import NDArray
from rasterio.crs import CRS
from rasterio.io import MemoryFile
from rasterio.shutil import copy as rio_copy
from rasterio.transform import Affine

EXT = {
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "sar": "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
    "sat": "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
}
# fmt: off
S2_BAND_INFO = {
    "B01": ("coastal", 0.443), "B02": ("blue", 0.490), "B03": ("green", 0.560), "B04": ("red", 0.665),
    "B05": ("rededge", 0.704), "B06": ("rededge", 0.740), "B07": ("rededge", 0.783), "B08": ("nir", 0.842),
    "B8A": ("nir08", 0.865), "B09": ("nir09", 0.945), "B11": ("swir16", 1.610), "B12": ("swir22", 2.190),
}
# fmt: on
"""Common name and centre wavelength (micrometres) of each S2 band."""
LICENSE = "CC0-1.0"


def write_cog(path: Path, data: NDArray[Any], transform: Affine, epsg: int, nodata: float) -> None:
    """Write one band as a deflate-compressed Cloud-Optimized GeoTIFF (byte-for-byte reproducible)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, cols = data.shape
    profile = {
        "driver": "GTiff",
        "width": cols,
        "height": rows,
        "count": 1,
        "dtype": data.dtype.name,
        "crs": CRS.from_epsg(epsg),
        "transform": transform,
        "nodata": nodata,
    }
    with MemoryFile() as mem, mem.open(**profile) as tmp:
        tmp.write(data, 1)
        rio_copy(tmp, str(path), driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES", BLOCKSIZE=256, OVERVIEWS="AUTO")


def _proj(epsg: int, shape: tuple[int, int], transform: Affine) -> dict[str, Any]:
    return {
        "proj:code": f"EPSG:{epsg}",
        "proj:epsg": epsg,
        "proj:shape": list(shape),
        "proj:transform": list(transform)[:6],
    }


def s2_asset(
    href: Path, band: str, res: int, shape: tuple[int, int], transform: Affine, offset_dn: int
) -> pystac.Asset:
    """Asset of one S2 L2A band (uint16 DN) or of the SCL (uint8 classes)."""
    extra: dict[str, Any] = {"gsd": float(res), **_proj(32643, shape, transform)}
    if band == "SCL":
        title = "Scene classification map (SCL)"
        extra["raster:bands"] = [{"nodata": 0, "data_type": "uint8", "spatial_resolution": res}]
    else:
        common, wl = S2_BAND_INFO[band]
        title = f"Band {band} ({common}) - {res}m"
        extra["eo:bands"] = [{"name": band, "common_name": common, "center_wavelength": wl}]
        # reflectance = DN * scale + offset, where DN = reflectance * 10000 + BOA_ADD_OFFSET.
        extra["raster:bands"] = [
            {
                "nodata": 0,
                "data_type": "uint16",
                "spatial_resolution": res,
                "scale": 0.0001,
                "offset": -offset_dn / 10000,
            }
        ]
    return pystac.Asset(
        href=str(href), title=title, media_type=pystac.MediaType.COG, roles=["data"], extra_fields=extra
    )


def s1_asset(href: Path, pol: str, shape: tuple[int, int], transform: Affine) -> pystac.Asset:
    """Asset of one S1 polarisation: geocoded sigma0, linear power, float32, NaN nodata."""
    extra = {
        "gsd": 20.0,
        **_proj(32643, shape, transform),
        "raster:bands": [{"nodata": "nan", "data_type": "float32", "spatial_resolution": 20, "unit": "linear power"}],
    }
    return pystac.Asset(
        href=str(href),
        title=f"{pol.upper()}: sigma0, linear power, geocoded (EPSG:32643, 20 m)",
        media_type=pystac.MediaType.COG,
        roles=["data"],
        extra_fields=extra,
    )


def dem_asset(href: Path, shape: tuple[int, int], transform: Affine) -> pystac.Asset:
    """Asset of the DEM: float32 metres, EPSG:4326, 1 arc-second, nodata -32767."""
    extra = {
        **_proj(4326, shape, transform),
        "raster:bands": [
            {"nodata": -32767.0, "data_type": "float32", "sampling": "point", "spatial_resolution": 30, "unit": "metre"}
        ],
    }
    return pystac.Asset(
        href=str(href), title="Elevation", media_type=pystac.MediaType.COG, roles=["data"], extra_fields=extra
    )


def make_item(
    item_id: str,
    footprint: Mapping[str, Any],
    bbox: list[float],
    when: datetime,
    properties: Mapping[str, Any],
    assets: Mapping[str, pystac.Asset],
    extensions: tuple[str, ...],
) -> pystac.Item:
    """A STAC item with the given assets (hrefs still absolute; made relative on save)."""
    item = pystac.Item(
        id=item_id,
        geometry=dict(footprint),
        bbox=bbox,
        datetime=when,
        properties=dict(properties),
        stac_extensions=[EXT[e] for e in extensions],
    )
    for key, asset in assets.items():
        item.add_asset(key, asset)
    return item


def make_collection(collection_id: str, description: str, items: list[pystac.Item]) -> pystac.Collection:
    """A collection whose extent is the union of its items' bboxes and times."""
    boxes = np.array([it.bbox for it in items])
    bbox = [float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()), float(boxes[:, 3].max())]
    times = sorted(it.datetime for it in items if it.datetime is not None)
    collection = pystac.Collection(
        id=collection_id,
        description=description,
        license=LICENSE,
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[times[0], times[-1]]])),
    )
    collection.add_items(items)
    return collection


def save_catalog(root: Path, catalog_id: str, description: str, collections: list[pystac.Collection]) -> Path:
    """Save a self-contained static catalog under ``root``; returns the catalog.json path."""
    catalog = pystac.Catalog(id=catalog_id, description=description)
    for collection in collections:
        catalog.add_child(collection)
    catalog.normalize_hrefs(str(root))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"
