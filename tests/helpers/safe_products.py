"""Synthetic SAFE products (Sentinel-2 L2A, Sentinel-1 GRD) built from real SAFE metadata templates.

The templates are the real product, tile and manifest XML of ``s2_safe_metadata`` and the real
annotation / calibration / noise XML of ``s1_safe_metadata`` (the real-data folder, see
:mod:`tests.helpers.realdata`). Ids, dates, geocoding and image sizes are rewritten for the
product being built; rasters are written to match:

* S2 L2A: one uint16 DN raster per band at its native resolution (JPEG 2000, lossless; GeoTIFF
  for the Esri variant's template), and the SCL at 20 m, under ``GRANULE/<granule>/IMG_DATA/R<res>m``
  as the product metadata's ``IMAGE_FILE`` list names them.
* S1 GRD IW: uint16 amplitude DN in radar geometry, one TIFF per polarisation with GCPs and no
  geotransform: ``DN² = σ⁰ · A_σ² + N`` with ``A_σ`` the real ``sigmaNought`` LUT and ``N`` the
  real thermal noise (range × azimuth), both resampled onto the synthetic image's lines and
  samples. Radar line / sample ``(r, c)`` is the centre of pixel ``(r, c)`` of the given σ⁰ grid
  (UTM): the geolocation grid says so, point by point, in latitude / longitude.

The computations here are independent of the readers under test (``tasks.safe_s2``,
``tasks.safe_s1``): they use scipy's regular-grid interpolation, not the readers' LUT code.

:func:`safe_products_for_demo` turns the demo catalog's S2 and S1 acquisitions into SAFE products
(some folders, some zips) beside a demo catalog that serves the DEM (``DIR/dem``).
"""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from numpy.typing import NDArray
from pyproj import Transformer
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.transform import Affine
from scipy.interpolate import RegularGridInterpolator
from shapely.geometry import Polygon, shape

__all__ = [
    "S1_TEMPLATE",
    "S2_TEMPLATES",
    "S1Spec",
    "S2Spec",
    "build_s1_safe",
    "build_s2_safe",
    "s1_spec_from_item",
    "s2_spec_from_item",
    "s2_spec_from_template",
    "safe_products_for_demo",
    "zip_product",
]

S2_TEMPLATES = {
    "02.14": "S2B_MSIL2A_20210122T133229_N0214_R081_T22HBD_20210122T155500.SAFE",
    "04.00": "S2B_MSIL2A_20220413T150759_N0400_R025_T33XWJ_20220414T082126.SAFE",
    "05.09": "S2A_MSIL2A_20230821T221941_N0509_R029_T01KAB_20230822T021825.SAFE",
}
"""Real S2 L2A metadata by processing baseline (04.00 is Esri's GeoTIFF variant)."""

S1_TEMPLATE = "S1A_IW_GRDH_1SDV_20210809T173953_20210809T174018_039156_049F13_6FF8.SAFE"
"""Real S1A IW GRDH 1SDV metadata (IPF 003.31)."""

_S1_STAMP = "20210809t173953-20210809t174018-039156-049f13"
"""The part of the template's file names that names the product (start, stop, orbit, datatake)."""

S2_NATIVE_RES = {
    "B01": 60,
    "B02": 10,
    "B03": 10,
    "B04": 10,
    "B05": 20,
    "B06": 20,
    "B07": 20,
    "B08": 10,
    "B8A": 20,
    "B09": 60,
    "B11": 20,
    "B12": 20,
    "SCL": 20,
}


# --- Sentinel-2 L2A ------------------------------------------------------------------------------


@dataclass(frozen=True)
class S2Spec:
    """What one synthetic S2 L2A product holds.

    ``rasters`` maps ``B01`` … ``B12``, ``B8A``, ``SCL`` to (uint16/uint8 array, its geotransform,
    resolution in metres) in EPSG ``epsg``; DN already carry the +1000 offset when the baseline
    is ≥ 04.00. ``footprint`` is EPSG:4326.
    """

    product_id: str
    baseline: str
    sensing: datetime
    tile: str
    epsg: int
    ul: tuple[float, float]
    """ULX, ULY of the tile, metres (``MTD_TL.xml`` Geoposition)."""
    tile_size_10m: tuple[int, int]
    """NROWS, NCOLS at 10 m (``MTD_TL.xml`` Size)."""
    footprint: Polygon | None
    cloud_cover: float
    rasters: Mapping[str, tuple[NDArray[Any], Affine, int]]
    template: str
    omit: tuple[str, ...] = ()
    """Bands listed in the metadata but not written (fault: a band missing)."""
    drop_baseline: bool = False
    """Write the product metadata without PROCESSING_BASELINE (fault)."""
    extra_members: tuple[tuple[str, bytes], ...] = field(default=())
    """Extra zip members (name, bytes), e.g. a ``../`` path (fault: zip-slip)."""


def _granule(spec: S2Spec) -> str:
    return f"L2A_T{spec.tile}_A000000_{spec.sensing:%Y%m%dT%H%M%S}"


def _stem(spec: S2Spec) -> str:
    return f"T{spec.tile}_{spec.sensing:%Y%m%dT%H%M%S}"


def _image_ext(template_text: str) -> str:
    return ".tif" if 'imageFormat="GeoTIFF"' in template_text else ".jp2"


def _sub(pattern: str, repl: str, text: str, what: str) -> str:
    out, n = re.subn(pattern, lambda _m: repl, text, flags=re.DOTALL)
    if n == 0:
        raise AssertionError(f"template has no {what}")
    return out


def _pos_list(footprint: Polygon) -> str:
    return " ".join(f"{lat!r} {lon!r}" for lon, lat in footprint.exterior.coords)


def build_s2_safe(out_dir: Path, templates: Path, spec: S2Spec, *, zip: bool = False) -> Path:
    """Writes ``<product_id>.SAFE`` (or ``<product_id>.zip`` holding it) under ``out_dir``; returns it.

    ``templates`` is the ``s2_safe_metadata`` folder.
    """
    src = templates / spec.template
    safe = Path(out_dir) / f"{spec.product_id}.SAFE"
    if safe.exists():
        shutil.rmtree(safe)
    granule = safe / "GRANULE" / _granule(spec)
    mtd = (src / "MTD_MSIL2A.xml").read_text()
    ext = _image_ext(mtd)
    files = []
    for key, (arr, transform, res) in sorted(spec.rasters.items()):
        rel = f"GRANULE/{_granule(spec)}/IMG_DATA/R{res}m/{_stem(spec)}_{key}_{res}m"
        files.append(rel)
        if key in spec.omit:
            continue
        _write_band(safe / (rel + ext), arr, transform, spec.epsg, ext)
    listing = "".join(f"\n<IMAGE_FILE>{f}</IMAGE_FILE>" for f in files) + "\n"
    mtd = re.sub(r"(<Granule [^>]*>).*?(</Granule>)", lambda m: m.group(1) + listing + m.group(2), mtd, flags=re.DOTALL)
    start = f"{spec.sensing:%Y-%m-%dT%H:%M:%S}.024Z"
    mtd = _sub(
        r"<PRODUCT_START_TIME>.*?</PRODUCT_START_TIME>",
        f"<PRODUCT_START_TIME>{start}</PRODUCT_START_TIME>",
        mtd,
        "start",
    )
    mtd = _sub(
        r"<PRODUCT_STOP_TIME>.*?</PRODUCT_STOP_TIME>", f"<PRODUCT_STOP_TIME>{start}</PRODUCT_STOP_TIME>", mtd, "stop"
    )
    mtd = _sub(r"<PRODUCT_URI>.*?</PRODUCT_URI>", f"<PRODUCT_URI>{spec.product_id}.SAFE</PRODUCT_URI>", mtd, "URI")
    mtd = _sub(
        r"<SPACECRAFT_NAME>.*?</SPACECRAFT_NAME>",
        f"<SPACECRAFT_NAME>Sentinel-2{spec.product_id[2]}</SPACECRAFT_NAME>",
        mtd,
        "spacecraft",
    )
    if spec.drop_baseline:
        mtd = _sub(r"\s*<PROCESSING_BASELINE>.*?</PROCESSING_BASELINE>", "", mtd, "baseline")
    else:
        mtd = _sub(
            r"<PROCESSING_BASELINE>.*?</PROCESSING_BASELINE>",
            f"<PROCESSING_BASELINE>{spec.baseline}</PROCESSING_BASELINE>",
            mtd,
            "baseline",
        )
    mtd = _sub(
        r"<Cloud_Coverage_Assessment>.*?</Cloud_Coverage_Assessment>",
        f"<Cloud_Coverage_Assessment>{spec.cloud_cover}</Cloud_Coverage_Assessment>",
        mtd,
        "cloud",
    )
    if spec.footprint is not None:
        mtd = _sub(
            r"<EXT_POS_LIST>.*?</EXT_POS_LIST>",
            f"<EXT_POS_LIST>{_pos_list(spec.footprint)} </EXT_POS_LIST>",
            mtd,
            "footprint",
        )
    _write(safe / "MTD_MSIL2A.xml", mtd)

    tl = next((src / "GRANULE").glob("*/MTD_TL.xml")).read_text()
    zone = spec.epsg % 100
    hemi = "N" if spec.epsg // 100 == 326 else "S"
    tl = _sub(
        r"<HORIZONTAL_CS_NAME>.*?</HORIZONTAL_CS_NAME>",
        f"<HORIZONTAL_CS_NAME>WGS84 / UTM zone {zone:02d}{hemi}</HORIZONTAL_CS_NAME>",
        tl,
        "CS name",
    )
    tl = _sub(
        r"<HORIZONTAL_CS_CODE>.*?</HORIZONTAL_CS_CODE>",
        f"<HORIZONTAL_CS_CODE>EPSG:{spec.epsg}</HORIZONTAL_CS_CODE>",
        tl,
        "CS code",
    )
    for res in (10, 20, 60):
        rows, cols = (-(-n * 10 // res) for n in spec.tile_size_10m)
        size = f'<Size resolution="{res}">\n<NROWS>{rows}</NROWS>\n<NCOLS>{cols}</NCOLS>\n</Size>'
        tl = _sub(rf'<Size resolution="{res}">.*?</Size>', size, tl, f"Size {res}")
        pos = (
            f'<Geoposition resolution="{res}">\n<ULX>{spec.ul[0]:g}</ULX>\n<ULY>{spec.ul[1]:g}</ULY>\n'
            f"<XDIM>{res}</XDIM>\n<YDIM>-{res}</YDIM>\n</Geoposition>"
        )
        tl = _sub(rf'<Geoposition resolution="{res}">.*?</Geoposition>', pos, tl, f"Geoposition {res}")
    tl = _sub(
        r"<SENSING_TIME([^>]*)>.*?</SENSING_TIME>",
        f'<SENSING_TIME metadataLevel="Standard">{spec.sensing:%Y-%m-%dT%H:%M:%S}.000000Z</SENSING_TIME>',
        tl,
        "sensing time",
    )
    _write(granule / "MTD_TL.xml", tl)
    manifest = (src / "manifest.safe").read_text().replace(spec.template.removesuffix(".SAFE"), spec.product_id)
    _write(safe / "manifest.safe", manifest)
    return zip_product(safe, spec.extra_members) if zip else safe


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _write_band(path: Path, arr: NDArray[Any], transform: Affine, epsg: int, ext: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = (
        {"driver": "JP2OpenJPEG", "QUALITY": 100, "REVERSIBLE": "YES"}
        if ext == ".jp2"
        else {"driver": "GTiff", "compress": "deflate"}
    )
    with rasterio.open(
        path,
        "w",
        width=arr.shape[1],
        height=arr.shape[0],
        count=1,
        dtype=arr.dtype,
        crs=CRS.from_epsg(epsg),
        transform=transform,
        nodata=0,
        **options,
    ) as ds:
        ds.write(arr, 1)


def zip_product(safe: Path, extra_members: Sequence[tuple[str, bytes]] = ()) -> Path:
    """``<name>.zip`` beside the ``<name>.SAFE`` folder, holding it as ``<name>.SAFE/…``; the folder is removed."""
    out = safe.with_suffix(".zip")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(safe.rglob("*")):
            if path.is_file():
                zf.write(path, f"{safe.name}/{path.relative_to(safe)}")
        for name, data in extra_members:
            zf.writestr(name, data)
    shutil.rmtree(safe)
    return out


def s2_spec_from_template(templates: Path, template_baseline: str, size_px: int = 24, **changes: Any) -> S2Spec:
    """A spec with the real template's own ids, tile geocoding and sensing time; small synthetic bands.

    ``changes`` override fields of the spec (``omit``, ``drop_baseline``, ``baseline`` …).

    Bands cover ``size_px`` 10 m pixels from the tile's upper-left corner (ULX, ULY of ``MTD_TL.xml``);
    DN are ``1000 × band index + 100 + offset`` (+1000 from baseline 04.00), SCL is 4 (vegetation).
    """
    name = S2_TEMPLATES[template_baseline]
    baseline = template_baseline
    src = templates / name
    tl = next((src / "GRANULE").glob("*/MTD_TL.xml")).read_text()
    epsg = int(re.search(r"<HORIZONTAL_CS_CODE>EPSG:(\d+)</HORIZONTAL_CS_CODE>", tl).group(1))  # type: ignore[union-attr]
    ulx = float(re.search(r'<Geoposition resolution="10">\s*<ULX>([\d.]+)</ULX>', tl).group(1))  # type: ignore[union-attr]
    uly = float(re.search(r'<Geoposition resolution="10">.*?<ULY>([\d.]+)</ULY>', tl, re.DOTALL).group(1))  # type: ignore[union-attr]
    sensing = datetime.strptime(name.split("_")[2], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    offset = 1000 if baseline >= "04.00" else 0
    rasters: dict[str, tuple[NDArray[Any], Affine, int]] = {}
    for i, (key, res) in enumerate(S2_NATIVE_RES.items()):
        n = max(1, size_px * 10 // res)
        if key == "SCL":
            arr: NDArray[Any] = np.full((n, n), 4, dtype=np.uint8)
        else:
            arr = np.full((n, n), 1000 * (i % 12) + 100 + offset, dtype=np.uint16)
        rasters[key] = (arr, Affine(res, 0, ulx, 0, -res, uly), res)
    spec = S2Spec(
        product_id=name.removesuffix(".SAFE"),
        baseline=baseline,
        sensing=sensing,
        tile=name.split("_")[5][1:],
        epsg=epsg,
        ul=(ulx, uly),
        tile_size_10m=(10980, 10980),
        footprint=None,
        cloud_cover=12.5,
        rasters=rasters,
        template=name,
    )
    return replace(spec, **changes)


def s2_spec_from_item(item: Any) -> S2Spec:
    """The spec of one demo S2 L2A item (``demo.synthetic``): its band COGs, ids and properties."""
    props = item.properties
    baseline = str(props["s2:processing_baseline"])
    rasters: dict[str, tuple[NDArray[Any], Affine, int]] = {}
    epsg = int(props["proj:epsg"])
    for key, res in S2_NATIVE_RES.items():
        with rasterio.open(item.assets[key].get_absolute_href()) as ds:
            rasters[key] = (ds.read(1), ds.transform, res)
    b02_t = rasters["B02"][1]
    return S2Spec(
        product_id=item.id,
        baseline=baseline,
        sensing=item.datetime,
        tile=str(props["s2:mgrs_tile"]),
        epsg=epsg,
        ul=(b02_t.c, b02_t.f),
        tile_size_10m=rasters["B02"][0].shape,
        footprint=shape(item.geometry),
        cloud_cover=float(props["eo:cloud_cover"]),
        rasters=rasters,
        template=S2_TEMPLATES["05.09" if baseline >= "04.00" else "02.14"],
    )


# --- Sentinel-1 GRD ------------------------------------------------------------------------------


@dataclass(frozen=True)
class S1Spec:
    """What one synthetic S1 GRD IW 1SDV product holds.

    ``sigma0`` maps ``vv``/``vh`` to linear σ⁰ (float, NaN nodata) on a north-up grid
    ``transform`` in EPSG ``epsg``; radar line / sample = that grid's row / column.
    """

    product_id: str
    start: datetime
    stop: datetime
    epsg: int
    transform: Affine
    sigma0: Mapping[str, NDArray[np.floating]]
    noise: bool = True
    """Add the thermal noise power to DN² (as real products carry it)."""
    drop_manifest: bool = False
    extra_members: tuple[tuple[str, bytes], ...] = ()


def _s1_stamp(spec: S1Spec) -> str:
    """The lower-case start-stop-orbit-datatake part of the product's file names."""
    parts = spec.product_id.lower().split("_")
    return f"{parts[4]}-{parts[5]}-{parts[6]}-{parts[7]}"


def _resample_vector(
    positions: NDArray[np.float64], values: NDArray[np.float64], scale: float, new_size: int, step: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """A LUT sampled at ``positions`` of the real image, resampled every ``step`` of the new one."""
    new = np.unique(np.append(np.arange(0, new_size, step), new_size - 1)).astype(np.int64)
    return new, np.interp(new / scale, positions, values)


def _ints(node: ET.Element) -> NDArray[np.float64]:
    return np.array((node.text or "").split(), dtype=np.float64)


def _set_list(node: ET.Element, values: NDArray[Any], fmt: str = "{:.6e}") -> None:
    node.text = " ".join(fmt.format(v) for v in values)
    node.set("count", str(len(values)))


@dataclass(frozen=True)
class _Luts:
    """The resampled LUTs on the synthetic image (for DN), rows × cols."""

    a_sigma: NDArray[np.float64]
    noise: NDArray[np.float64]


def _calibration(root: ET.Element, shape_: tuple[int, int], real: tuple[int, int]) -> NDArray[np.float64]:
    """Rewrites a calibration document for ``shape_``; returns ``A_σ`` on every image pixel."""
    sl, sp = (shape_[0] - 1) / (real[0] - 1), (shape_[1] - 1) / (real[1] - 1)
    lines, table = [], []
    last = -1
    vector_list = root.find("calibrationVectorList")
    assert vector_list is not None
    for vec in list(vector_list):
        line = round(float(vec.findtext("line", "0")) * sl)
        if line <= last:  # vectors closer than one synthetic line: one is enough
            vector_list.remove(vec)
            continue
        last = line
        pix_node = vec.find("pixel")
        assert pix_node is not None
        pix = _ints(pix_node)
        new_pix: NDArray[np.int64] = np.array([])
        for key in ("sigmaNought", "betaNought", "gamma", "dn"):
            node = vec.find(key)
            assert node is not None
            new_pix, vals = _resample_vector(pix, _ints(node), sp, shape_[1], 4)
            _set_list(node, vals)
            if key == "sigmaNought":
                table.append(vals)
        _set_list(pix_node, new_pix, "{:d}")
        line_node = vec.find("line")
        assert line_node is not None
        line_node.text = str(line)
        lines.append(line)
        cols = new_pix
    vector_list.set("count", str(len(lines)))
    return _on_image(np.array(lines, dtype=np.float64), cols.astype(np.float64), np.array(table), shape_)


def _on_image(
    lines: NDArray[np.float64], cols: NDArray[np.float64], table: NDArray[np.float64], shape_: tuple[int, int]
) -> NDArray[np.float64]:
    """Bilinear values of a lines × cols table at every pixel; the edge value holds outside it."""
    rows = np.clip(np.arange(shape_[0], dtype=np.float64), lines[0], lines[-1])
    cc = np.clip(np.arange(shape_[1], dtype=np.float64), cols[0], cols[-1])
    rr, cg = np.meshgrid(rows, cc, indexing="ij")
    out: NDArray[np.float64] = RegularGridInterpolator((lines, cols), table)(np.stack([rr, cg], axis=-1))
    return out


def _noise(root: ET.Element, shape_: tuple[int, int], real: tuple[int, int]) -> NDArray[np.float64]:
    """Rewrites a noise document (IPF ≥ 2.9: range + azimuth vectors) for ``shape_``; returns N per pixel."""
    sl, sp = (shape_[0] - 1) / (real[0] - 1), (shape_[1] - 1) / (real[1] - 1)
    range_list = root.find("noiseRangeVectorList")
    assert range_list is not None
    lines, table, cols = [], [], np.array([])
    last = -1
    for vec in list(range_list):
        line = round(float(vec.findtext("line", "0")) * sl)
        if line <= last:
            range_list.remove(vec)
            continue
        last = line
        pix_node, lut_node, line_node = vec.find("pixel"), vec.find("noiseRangeLut"), vec.find("line")
        assert pix_node is not None and lut_node is not None and line_node is not None
        cols, vals = _resample_vector(_ints(pix_node), _ints(lut_node), sp, shape_[1], 4)
        _set_list(pix_node, cols, "{:d}")
        _set_list(lut_node, vals)
        line_node.text = str(line)
        lines.append(line)
        table.append(vals)
    range_list.set("count", str(len(lines)))
    noise = _on_image(np.array(lines, dtype=np.float64), cols.astype(np.float64), np.array(table), shape_)
    azimuth = np.ones(shape_)
    for vec in root.findall("noiseAzimuthVectorList/noiseAzimuthVector"):
        bounds = {}
        for key, scale, n in (
            ("firstAzimuthLine", sl, shape_[0]),
            ("lastAzimuthLine", sl, shape_[0]),
            ("firstRangeSample", sp, shape_[1]),
            ("lastRangeSample", sp, shape_[1]),
        ):
            node = vec.find(key)
            assert node is not None
            v = float(node.text or "0")
            # first: scaled and rounded; last: one before the next block's first, so blocks tile the image
            new = round(v * scale) if key.startswith("first") else min(round((v + 1) * scale) - 1, n - 1)
            if key.startswith("last") and v + 1 >= (real[0] if "Line" in key else real[1]):
                new = n - 1
            node.text = str(new)
            bounds[key] = new
        line_node, lut_node = vec.find("line"), vec.find("noiseAzimuthLut")
        assert line_node is not None and lut_node is not None
        r0, r1 = bounds["firstAzimuthLine"], bounds["lastAzimuthLine"]
        new_lines = np.unique(np.append(np.arange(r0, r1 + 1, 2), r1)).astype(np.int64)
        vals = np.interp(new_lines / sl, _ints(line_node), _ints(lut_node))
        _set_list(line_node, new_lines, "{:d}")
        _set_list(lut_node, vals)
        rows = np.arange(r0, r1 + 1)
        c0, c1 = bounds["firstRangeSample"], bounds["lastRangeSample"]
        azimuth[r0 : r1 + 1, c0 : c1 + 1] = np.interp(rows, new_lines, vals)[:, np.newaxis]
    return noise * azimuth


def _geolocation(root: ET.Element, spec: S1Spec, shape_: tuple[int, int]) -> list[GroundControlPoint]:
    """Rewrites an annotation's image size and geolocation grid (10 × 21 points) for the spec's grid."""
    info = root.find("imageAnnotation/imageInformation")
    assert info is not None
    for key, value in (("numberOfLines", shape_[0]), ("numberOfSamples", shape_[1])):
        node = info.find(key)
        assert node is not None
        node.text = str(value)
    point_list = root.find("geolocationGrid/geolocationGridPointList")
    assert point_list is not None
    template = point_list[0]
    for p in list(point_list):
        point_list.remove(p)
    to_geo = Transformer.from_crs(spec.epsg, 4326, always_xy=True)
    lines = np.unique(np.round(np.linspace(0, shape_[0] - 1, 10))).astype(int)
    pixels = np.unique(np.round(np.linspace(0, shape_[1] - 1, 21))).astype(int)
    gcps = []
    for r in lines:
        for c in pixels:
            x, y = spec.transform @ (c + 0.5, r + 0.5)  # the annotation indexes pixel centres
            lon, lat = to_geo.transform(x, y)
            point = ET.fromstring(ET.tostring(template))
            for key, value in (
                ("line", str(r)),
                ("pixel", str(c)),
                ("latitude", repr(lat)),
                ("longitude", repr(lon)),
                ("height", "0"),
            ):
                node = point.find(key)
                assert node is not None
                node.text = value
            point_list.append(point)
            gcps.append(GroundControlPoint(row=r + 0.5, col=c + 0.5, x=lon, y=lat, z=0.0))
    point_list.set("count", str(len(lines) * len(pixels)))
    return gcps


def build_s1_safe(out_dir: Path, templates: Path, spec: S1Spec, *, zip: bool = False) -> Path:
    """Writes ``<product_id>.SAFE`` (or its zip) under ``out_dir``; returns it.

    ``templates`` is the ``s1_safe_metadata`` folder. Annotation, calibration and noise XML are
    the real ones with the image size, geolocation grid and LUT positions rewritten; the
    measurement TIFFs hold ``round(sqrt(σ⁰ · A_σ² + N))`` (0 where σ⁰ is NaN).
    """
    src = templates / S1_TEMPLATE
    safe = Path(out_dir) / f"{spec.product_id}.SAFE"
    if safe.exists():
        shutil.rmtree(safe)
    stamp = _s1_stamp(spec)
    first = next(iter(spec.sigma0.values()))
    shape_ = (int(first.shape[0]), int(first.shape[1]))
    for number, pol in ((1, "vv"), (2, "vh")):
        name = f"s1a-iw-grd-{pol}-{_S1_STAMP}-00{number}"
        new = f"{spec.product_id[:3].lower()}-iw-grd-{pol}-{stamp}-00{number}"
        ann = ET.parse(src / "annotation" / f"{name}.xml").getroot()
        real = (
            int(ann.findtext("imageAnnotation/imageInformation/numberOfLines", "0")),
            int(ann.findtext("imageAnnotation/imageInformation/numberOfSamples", "0")),
        )
        gcps = _geolocation(ann, spec, shape_)
        cal = ET.parse(src / "annotation" / "calibration" / f"calibration-{name}.xml").getroot()
        a_sigma = _calibration(cal, shape_, real)
        noise_root = ET.parse(src / "annotation" / "calibration" / f"noise-{name}.xml").getroot()
        noise = _noise(noise_root, shape_, real)
        for root, rel in (
            (ann, f"annotation/{new}.xml"),
            (cal, f"annotation/calibration/calibration-{new}.xml"),
            (noise_root, f"annotation/calibration/noise-{new}.xml"),
        ):
            (safe / rel).parent.mkdir(parents=True, exist_ok=True)
            ET.ElementTree(root).write(safe / rel, encoding="UTF-8", xml_declaration=True)
        sigma0 = np.asarray(spec.sigma0[pol], dtype=np.float64)
        power = sigma0 * a_sigma**2 + (noise if spec.noise else 0.0)
        dn = np.where(np.isfinite(sigma0), np.clip(np.rint(np.sqrt(np.maximum(power, 0.0))), 1, 65535), 0).astype(
            np.uint16
        )
        tiff = safe / "measurement" / f"{new}.tiff"
        tiff.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(
            tiff,
            "w",
            driver="GTiff",
            width=shape_[1],
            height=shape_[0],
            count=1,
            dtype="uint16",
            gcps=gcps,
            crs=CRS.from_epsg(4326),
        ) as ds:
            ds.write(dn, 1)
    if not spec.drop_manifest:
        manifest = (src / "manifest.safe").read_text().replace(_S1_STAMP, stamp)
        manifest = _sub(
            r"<safe:startTime>.*?</safe:startTime>",
            f"<safe:startTime>{spec.start:%Y-%m-%dT%H:%M:%S.%f}</safe:startTime>",
            manifest,
            "start",
        )
        manifest = _sub(
            r"<safe:stopTime>.*?</safe:stopTime>",
            f"<safe:stopTime>{spec.stop:%Y-%m-%dT%H:%M:%S.%f}</safe:stopTime>",
            manifest,
            "stop",
        )
        to_geo = Transformer.from_crs(spec.epsg, 4326, always_xy=True)
        corners = [spec.transform @ xy for xy in ((0, 0), (shape_[1], 0), (shape_[1], shape_[0]), (0, shape_[0]))]
        coords = " ".join(f"{lat:.6f},{lon:.6f}" for lon, lat in (to_geo.transform(x, y) for x, y in corners))
        manifest = _sub(
            r"<gml:coordinates>.*?</gml:coordinates>",
            f"<gml:coordinates>{coords}</gml:coordinates>",
            manifest,
            "footprint",
        )
        _write(safe / "manifest.safe", manifest)
    return zip_product(safe, spec.extra_members) if zip else safe


def s1_spec_from_item(item: Any) -> S1Spec:
    """The spec of one demo S1 item (geocoded linear σ⁰ COGs, ``demo.synthetic``)."""
    sigma0 = {}
    transform = None
    for pol in ("vv", "vh"):
        with rasterio.open(item.assets[pol].get_absolute_href()) as ds:
            sigma0[pol] = ds.read(1).astype(np.float64)
            transform = ds.transform
    assert transform is not None
    return S1Spec(
        product_id=item.id,
        start=item.datetime,
        stop=item.datetime + timedelta(seconds=25),
        epsg=int(item.properties["proj:epsg"]),
        transform=transform,
        sigma0=sigma0,
    )


def safe_products_for_demo(root: Path, size_px: int = 256, *, seed: int = 0) -> list[Path]:
    """The demo acquisitions as SAFE products under ``root``, and the demo catalog at ``root/dem``.

    ``root/dem`` is the full demo catalog (``demo.synthetic.generate_demo_catalog``): its DEM item
    serves ``safe:root``, and ``local:root/dem`` is the STAC path over the same scenes. Products
    alternate between ``.SAFE`` folders and ``.zip`` files (first S2 a folder, first S1 a zip).
    """
    import pystac

    from demo.synthetic import generate_demo_catalog

    root = Path(root)
    catalog = generate_demo_catalog(root / "dem", size_px=size_px, seed=seed)
    cat = pystac.read_file(str(catalog.catalog_path))
    assert isinstance(cat, pystac.Catalog)
    made: list[Path] = []
    templates_s2 = _realdata("s2_safe_metadata")
    templates_s1 = _realdata("s1_safe_metadata")
    for child in cat.get_children():
        for k, item in enumerate(sorted(child.get_items(), key=lambda i: i.id)):
            if child.id == "sentinel-2-l2a":
                made.append(build_s2_safe(root, templates_s2, s2_spec_from_item(item), zip=k % 2 == 1))
            elif child.id == "sentinel-1-grd":
                made.append(build_s1_safe(root, templates_s1, s1_spec_from_item(item), zip=k % 2 == 0))
    return made


def _realdata(name: str) -> Path:
    from tests.helpers import realdata

    return realdata.require(name)
