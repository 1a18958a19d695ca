"""Fabricate each raster bad-input class of reliability §3 inside a copy of the demo catalog.

Every fault lives in its *own* scene: a clone of one demo S2 item (a second acquisition of the
same day, or a day of its own with its own S1 clone when the fault is in S1), so one flow run can
carry every class while the demo's own scenes stay untouched. :func:`fault_catalog` builds the
catalog twice over: with ``faulty=False`` the clones are exact copies (the clean reference the
faulty run is compared with), with ``faulty=True`` each clone carries its fault.

All files are tiny (the demo's 256 px scenes, a 64 px block layout for truncation). The classes
(:data:`SCENE_FAULTS`):

=================  =========================================================================
truncated          one band rewritten as a tiled (64 px) GeoTIFF and cut at 60 % of its bytes
missing_crs        one band written without CRS and geotransform
wrong_crs          one band's UTM coordinates labelled EPSG:4326
all_nodata         every band 0 (the L2A nodata value), SCL 0
all_cloud          SCL 9 (cloud, high probability) everywhere
nan_nodata         S1 with NaN over one lake and no nodata tag (file and item)
offset_baseline    a pre-04.00 scene re-encoded with the +1000 DN offset and baseline 05.09
missing_scl        the item has no SCL asset
missing_baseline   the item states no processing baseline
mismatched_grid    S1 warped to the neighbouring UTM zone at 30 m, origin shifted half a pixel
=================  =========================================================================

:func:`shift_catalog` moves a whole catalog east so that it straddles a UTM zone boundary.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.warp import Resampling, reproject, transform_bounds, transform_geom
from rasterio.windows import from_bounds
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry

from demo.synthetic import DemoCatalog, load_truth

__all__ = [
    "SCENE_FAULTS",
    "FaultScene",
    "copy_catalog",
    "fault_catalog",
    "lake_outline",
    "shift_catalog",
    "tiny_band",
    "truncate",
]

UTM = 32643
"""The demo's CRS (WGS 84 / UTM 43N)."""
S2_COLLECTION, S1_COLLECTION, DEM_COLLECTION = "sentinel-2-l2a", "sentinel-1-grd", "cop-dem-glo-30"


@dataclass(frozen=True)
class FaultPlan:
    """Where one fault goes: which demo date is cloned, when the clone is sensed, what it breaks."""

    base_index: int
    """Index of the demo S2 date whose item is cloned (0 … 4; 3 has no S1 partner)."""
    day: str | None
    """Day of the clone (ISO); None: the base day (a second acquisition of that day)."""
    own_s1: bool
    """The clone gets its own S1 (on its day), cloned from the base date's S1 partner."""


SCENE_FAULTS: dict[str, FaultPlan] = {
    # Clones on a base day share that day's S1. Own-S1 clones sit on days no demo S2 date pairs
    # with in preference to its own S1, and more than 7 days from 2024-09-02 (which must stay
    # unpaired), so the demo's own pairing is unchanged.
    "truncated": FaultPlan(0, None, False),
    "missing_crs": FaultPlan(1, None, False),
    "wrong_crs": FaultPlan(1, None, False),
    "all_nodata": FaultPlan(2, None, False),
    "all_cloud": FaultPlan(4, None, False),  # a dry date: cloud read as clear would retire lakes
    "nan_nodata": FaultPlan(4, "2024-09-12", True),
    "offset_baseline": FaultPlan(2, None, False),  # the 02.14 date, re-encoded as 05.09
    "missing_scl": FaultPlan(4, None, False),  # a dry date again
    "missing_baseline": FaultPlan(0, None, False),  # a 05.09 date: the detector must find 1000
    "mismatched_grid": FaultPlan(0, "2024-07-12", True),
}
"""Each scene fault class → its clone."""


@dataclass(frozen=True)
class FaultScene:
    """One clone of a fault catalog."""

    fault: str
    s2_id: str
    s1_id: str | None
    """The clone's own S1 item, when it has one."""
    sensing_time: datetime
    files: tuple[Path, ...]
    """The files the fault changed (empty for the clean clone or an item-only fault)."""


# --- catalog plumbing ----------------------------------------------------------------------------


def copy_catalog(src: DemoCatalog, dst: Path) -> DemoCatalog:
    """A private copy of a demo catalog (its hrefs are relative, so the copy reads its own files)."""
    shutil.copytree(src.root, dst)
    return DemoCatalog(
        dst,
        dst / src.catalog_path.relative_to(src.root),
        dst / src.aoi_path.relative_to(src.root),
        dst / src.truth_path.relative_to(src.root),
        src.dates,
    )


def _dates(cat: DemoCatalog) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads((cat.root / "truth" / "truth.json").read_text())["dates"]
    return rows


def _item_path(cat: DemoCatalog, collection: str, item_id: str) -> Path:
    return cat.root / collection / item_id / f"{item_id}.json"


def _read_item(path: Path) -> dict[str, Any]:
    item: dict[str, Any] = json.loads(path.read_text())
    return item


def _asset_path(cat: DemoCatalog, collection: str, item_id: str, key: str) -> Path:
    path = _item_path(cat, collection, item_id)
    return (path.parent / _read_item(path)["assets"][key]["href"]).resolve()


def _stamp(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%S")


def _clone_item(cat: DemoCatalog, collection: str, item_id: str, new_id: str, when: datetime) -> Path:
    """Copies an item folder under ``new_id`` sensed at ``when`` and links it from its collection."""
    src = _item_path(cat, collection, item_id).parent
    dst = cat.root / collection / new_id
    shutil.copytree(src, dst)
    (dst / f"{item_id}.json").rename(dst / f"{new_id}.json")
    item = _read_item(dst / f"{new_id}.json")
    item["id"] = new_id
    item["properties"]["datetime"] = when.isoformat().replace("+00:00", "Z")
    (dst / f"{new_id}.json").write_text(json.dumps(item, indent=1))
    collection_path = cat.root / collection / "collection.json"
    coll = json.loads(collection_path.read_text())
    coll["links"].append({"rel": "item", "href": f"./{new_id}/{new_id}.json", "type": "application/geo+json"})
    collection_path.write_text(json.dumps(coll, indent=1))
    return dst / f"{new_id}.json"


def _edit_item(path: Path, edit: Any) -> None:
    item = _read_item(path)
    edit(item)
    path.write_text(json.dumps(item, indent=1))


def lake_outline(cat: DemoCatalog, name: str) -> BaseGeometry:
    """The largest truth outline of one demo lake (``draining``, ``growing`` …), EPSG:32643."""
    truth = load_truth(cat.truth_path).to_crs(UTM)
    rows = truth[truth["lake"] == name]
    return rows.geometry.iloc[int(rows.geometry.area.argmax())]


# --- the faults, one file at a time --------------------------------------------------------------


def truncate(path: Path, keep: float = 0.6, block: int = 64) -> Path:
    """Rewrites ``path`` as a tiled GeoTIFF (``block`` px, deflate) and cuts it at ``keep`` of its bytes.

    The header and the first tiles survive, so GDAL opens the file and fails only when it reads a
    block past the cut (``TIFFReadEncodedTile() failed``): the class the ingest must catch.
    """
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    profile.update(tiled=True, blockxsize=block, blockysize=block, compress="deflate")
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    return path


def strip_georeferencing(path: Path) -> Path:
    """Rewrites ``path`` with its pixels only: no CRS, no geotransform (GDAL's identity transform)."""
    with rasterio.open(path) as src:
        data, dtype, nodata = src.read(), src.dtypes[0], src.nodata
    path.unlink()
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=dtype
    ) as dst:
        dst.write(data)
        if nodata is not None:
            dst.nodata = nodata
    return path


def mislabel_crs(path: Path, epsg: int = 4326) -> Path:
    """Tags the file's UTM coordinates as ``epsg`` (pixels and geotransform untouched)."""
    with rasterio.open(path, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        ds.crs = CRS.from_epsg(epsg)
    return path


def fill(path: Path, value: float) -> Path:
    """Every pixel of the file set to ``value``."""
    with rasterio.open(path, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        ds.write(np.full((ds.count, ds.height, ds.width), value, dtype=ds.dtypes[0]))
    return path


def add_boa_offset(path: Path, offset: int = 1000) -> Path:
    """Adds the baseline-04.00 ``BOA_ADD_OFFSET`` to every data pixel (0 stays nodata)."""
    with rasterio.open(path, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        dn = ds.read().astype(np.int64)
        ds.write(np.where(dn > 0, np.minimum(dn + offset, 65535), 0).astype(ds.dtypes[0]))
    return path


def nan_without_nodata(path: Path, bounds: tuple[float, float, float, float]) -> Path:
    """NaN over ``bounds`` (the file's CRS) and no nodata tag: the NaN is nowhere declared."""
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
        window = from_bounds(*bounds, transform=src.transform).round_offsets().round_lengths()
    rows, cols = window.toslices()
    data[:, rows, cols] = np.nan
    profile.pop("nodata", None)
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    with rasterio.open(path) as check:
        assert check.nodata is None, path
    return path


def regrid(path: Path, epsg: int, res: float, shift: float) -> dict[str, Any]:
    """Warps ``path`` onto a grid in ``epsg`` at ``res`` m whose origin is ``shift`` m off the res lattice.

    Returns the asset's new ``proj:*`` fields.
    """
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read(1)
        nodata = np.nan if src.nodata is None else src.nodata
        w, s, e, n = transform_bounds(src.crs, CRS.from_epsg(epsg), *src.bounds)
        x0, y0 = np.floor(w / res) * res + shift, np.ceil(n / res) * res + shift
        width, height = int(np.ceil((e - x0) / res)), int(np.ceil((y0 - s) / res))
        transform = Affine(res, 0.0, x0, 0.0, -res, y0)
        out = np.full((height, width), nodata, dtype=np.float32)
        reproject(
            data,
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            src_nodata=nodata,
            dst_transform=transform,
            dst_crs=CRS.from_epsg(epsg),
            dst_nodata=nodata,
            resampling=Resampling.bilinear,
        )
    profile.update(
        crs=CRS.from_epsg(epsg), transform=transform, width=width, height=height, tiled=False, dtype="float32"
    )
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(out, 1)
    return {
        "gsd": res,
        "proj:code": f"EPSG:{epsg}",
        "proj:epsg": epsg,
        "proj:shape": [height, width],
        "proj:transform": list(transform)[:6],
    }


def tiny_band(
    path: Path,
    *,
    size: int = 64,
    res: float = 10.0,
    origin: tuple[float, float] = (668100.0, 4769760.0),
    epsg: int | None = UTM,
    dtype: str = "uint16",
    nodata: float | None = 0,
    value: float = 1200,
) -> Path:
    """A standalone ``size`` px single-band GeoTIFF (tiled 16 px blocks, deflate): a ramp around ``value``.

    ``epsg`` None writes no CRS and no geotransform. The ramp keeps every pixel valid (never 0).
    """
    ramp = value + np.add.outer(np.arange(size), np.arange(size)).astype(np.float64)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": dtype,
        "tiled": True,
        "blockxsize": 16,
        "blockysize": 16,
        "compress": "deflate",
    }
    if epsg is not None:
        profile.update(crs=CRS.from_epsg(epsg), transform=Affine(res, 0.0, origin[0], 0.0, -res, origin[1]))
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(ramp.astype(dtype)[np.newaxis])
    return path


# --- one fault catalog ---------------------------------------------------------------------------


def _apply(fault: str, cat: DemoCatalog, s2_path: Path, s1_path: Path | None) -> tuple[Path, ...]:
    """Breaks the clone's files (or item) as ``fault`` says; returns the files changed."""
    s2_id = s2_path.stem
    band = lambda key: _asset_path(cat, S2_COLLECTION, s2_id, key)  # noqa: E731
    s2_keys = [k for k in _read_item(s2_path)["assets"] if k != "SCL"]
    if fault == "truncated":
        return (truncate(band("B08")),)
    if fault == "missing_crs":
        return (strip_georeferencing(band("B03")),)
    if fault == "wrong_crs":
        return (mislabel_crs(band("B04")),)
    if fault == "all_nodata":
        return (*(fill(band(k), 0) for k in s2_keys), fill(band("SCL"), 0))
    if fault == "all_cloud":
        return (fill(band("SCL"), 9),)
    if fault == "offset_baseline":

        def restate(item: dict[str, Any]) -> None:
            item["properties"]["s2:processing_baseline"] = "05.09"
            item["properties"]["s2:boa_add_offset"] = -1000
            for key in s2_keys:
                item["assets"][key]["raster:bands"][0]["offset"] = -0.1

        _edit_item(s2_path, restate)
        return tuple(add_boa_offset(band(k)) for k in s2_keys)
    if fault == "missing_scl":
        _edit_item(s2_path, lambda item: item["assets"].pop("SCL"))
        return ()
    if fault == "missing_baseline":
        _edit_item(s2_path, lambda item: item["properties"].pop("s2:processing_baseline"))
        return ()
    assert s1_path is not None, fault
    s1_id = s1_path.stem
    pols = ("vv", "vh")
    if fault == "nan_nodata":
        x0, y0, x1, y1 = lake_outline(cat, "draining").buffer(60.0).bounds
        files = tuple(nan_without_nodata(_asset_path(cat, S1_COLLECTION, s1_id, p), (x0, y0, x1, y1)) for p in pols)

        def undeclare(item: dict[str, Any]) -> None:
            for p in pols:
                item["assets"][p]["raster:bands"][0].pop("nodata", None)

        _edit_item(s1_path, undeclare)
        return files
    if fault == "mismatched_grid":
        fields = {p: regrid(_asset_path(cat, S1_COLLECTION, s1_id, p), 32644, 30.0, 15.0) for p in pols}

        def restate_grid(item: dict[str, Any]) -> None:
            for p in pols:
                item["assets"][p].update(fields[p])
                item["assets"][p]["title"] = f"{p.upper()}: sigma0, linear power, geocoded (EPSG:32644, 30 m)"

        _edit_item(s1_path, restate_grid)
        return tuple(_asset_path(cat, S1_COLLECTION, s1_id, p) for p in pols)
    raise ValueError(f"unknown fault class {fault!r}")


def fault_catalog(
    pristine: DemoCatalog, dst: Path, *, faulty: bool, faults: tuple[str, ...] = tuple(SCENE_FAULTS)
) -> tuple[DemoCatalog, dict[str, FaultScene]]:
    """A copy of ``pristine`` plus one clone scene per fault class, broken when ``faulty``.

    The clones' ids and sensing times are the same in the clean and the faulty catalog, so the
    two runs' scenes pair up one to one.
    """
    cat = copy_catalog(pristine, dst)
    rows = _dates(cat)
    scenes: dict[str, FaultScene] = {}
    for n, fault in enumerate(faults, 1):
        plan = SCENE_FAULTS[fault]
        base = rows[plan.base_index]
        base_item = _read_item(_item_path(cat, S2_COLLECTION, base["s2_item_id"]))
        base_time = datetime.fromisoformat(base_item["properties"]["datetime"].replace("Z", "+00:00"))
        if plan.day is None:
            when = base_time + timedelta(minutes=7 * n)  # a later acquisition of the same day
        else:
            when = datetime.combine(datetime.fromisoformat(plan.day).date(), base_time.timetz())
        s2_id = re.sub(r"_\d{8}T\d{6}_", f"_{_stamp(when)}_", base["s2_item_id"], count=1)
        s2_path = _clone_item(cat, S2_COLLECTION, base["s2_item_id"], s2_id, when)
        s1_path: Path | None = None
        if plan.own_s1:
            s1_base = base["s1_item_id"]
            s1_item = _read_item(_item_path(cat, S1_COLLECTION, s1_base))
            s1_time = datetime.fromisoformat(s1_item["properties"]["datetime"].replace("Z", "+00:00"))
            s1_when = datetime.combine(when.date(), s1_time.timetz()).astimezone(UTC)
            start, stop = _stamp(s1_when), _stamp(s1_when + timedelta(seconds=25))
            s1_id = re.sub(r"_\d{8}T\d{6}_\d{8}T\d{6}_", f"_{start}_{stop}_", s1_base, count=1)
            s1_id = s1_id[:-4] + f"F{n:03d}"
            s1_path = _clone_item(cat, S1_COLLECTION, s1_base, s1_id, s1_when)
        files = _apply(fault, cat, s2_path, s1_path) if faulty else ()
        scenes[fault] = FaultScene(fault, s2_id, s1_path.stem if s1_path else None, when, files)
    return cat, scenes


# --- a catalog across a UTM zone boundary ----------------------------------------------------------


def _shift_raster(path: Path, dx: float) -> None:
    with rasterio.open(path, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        t = ds.transform
        ds.transform = Affine(t.a, t.b, t.c + dx, t.d, t.e, t.f)


def _shift_geometry(geom: dict[str, Any], dx: float) -> dict[str, Any]:
    """A lon/lat geometry moved ``dx`` metres east in UTM 43N (densified: UTM lines bend in lon/lat)."""
    utm = shape(transform_geom("EPSG:4326", f"EPSG:{UTM}", geom))
    from shapely.affinity import translate

    moved: dict[str, Any] = transform_geom(f"EPSG:{UTM}", "EPSG:4326", mapping(translate(utm, xoff=dx)))
    return moved


def shift_catalog(pristine: DemoCatalog, dst: Path, dx: float) -> DemoCatalog:
    """A copy of ``pristine`` moved ``dx`` metres east in UTM 43N: rasters, items, AOI and truth.

    The S2 and S1 rasters keep their UTM 43N grid (shifted origin); the DEM is re-written in UTM
    43N at 30 m (a GLO-30 tile in lon/lat cannot be shifted by a metric offset), which the
    pipeline warps like any DEM. Use it to put the scene across the 78° E zone boundary.
    """
    cat = copy_catalog(pristine, dst)
    for collection in (S2_COLLECTION, S1_COLLECTION, DEM_COLLECTION):
        for item_path in sorted((cat.root / collection).glob("*/*.json")):
            item = _read_item(item_path)
            for asset in item["assets"].values():
                file = (item_path.parent / asset["href"]).resolve()
                if collection == DEM_COLLECTION:
                    fields = regrid(file, UTM, 30.0, 0.0)
                    _shift_raster(file, dx)
                    fields["proj:transform"][2] += dx
                    asset.update(fields)
                else:
                    _shift_raster(file, dx)
                    if "proj:transform" in asset:
                        asset["proj:transform"][2] += dx
            item["geometry"] = _shift_geometry(item["geometry"], dx)
            item["bbox"] = list(shape(item["geometry"]).bounds)
            item_path.write_text(json.dumps(item, indent=1))
    aoi = json.loads(cat.aoi_path.read_text())
    for feature in aoi["features"]:
        feature["geometry"] = _shift_geometry(feature["geometry"], dx)
    cat.aoi_path.write_text(json.dumps(aoi))
    truth = json.loads(cat.truth_path.read_text())
    for feature in truth["features"]:
        feature["geometry"] = _shift_geometry(feature["geometry"], dx)
    cat.truth_path.write_text(json.dumps(truth))
    return cat


def utm_shift_to(lon: float, pristine: DemoCatalog) -> float:
    """Metres east (UTM 43N) that put the pristine AOI's centre on longitude ``lon``."""
    aoi = shape(json.loads(pristine.aoi_path.read_text())["features"][0]["geometry"])
    cx, cy = aoi.centroid.x, aoi.centroid.y
    (x_from,), _ = _to_utm([cx], [cy])
    (x_to,), _ = _to_utm([lon], [cy])
    return float(x_to - x_from)


def _to_utm(lons: list[float], lats: list[float]) -> tuple[list[float], list[float]]:
    from rasterio.warp import transform

    xs, ys = transform("EPSG:4326", f"EPSG:{UTM}", lons, lats)
    return list(xs), list(ys)


def footprint_box(cat: DemoCatalog) -> BaseGeometry:
    """The AOI's bounding box, lon/lat."""
    return box(*shape(json.loads(cat.aoi_path.read_text())["features"][0]["geometry"]).bounds)
