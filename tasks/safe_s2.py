"""A Sentinel-2 L2A SAFE product (folder or zip) as an :class:`~tasks.acquisition.Acquisition`.

What is read, and from where:

* ``MTD_MSIL2A.xml`` (product metadata): ``PRODUCT_URI`` (the product id), ``PRODUCT_START_TIME``
  (sensing time, UTC), ``SPACECRAFT_NAME``, ``PROCESSING_BASELINE`` (required: it decides the
  +1000 DN offset the preprocessing removes), ``BOA_QUANTIFICATION_VALUE`` and
  ``BOA_ADD_OFFSET`` per band (the scale/offset recorded on the acquisition; they must agree with
  the baseline), ``Cloud_Coverage_Assessment`` (percent), the footprint ``EXT_POS_LIST``
  (latitude longitude pairs, EPSG:4326; split at the antimeridian when it crosses it), and the
  ``IMAGE_FILE`` list of the granule: the band files, without extension (``.jp2`` for JPEG 2000
  products, ``.tif`` for the GeoTIFF variant, per the granule's ``imageFormat``).
* ``GRANULE/*/MTD_TL.xml`` (tile metadata): ``HORIZONTAL_CS_CODE`` (the tile's EPSG) and the
  10 m ``Geoposition`` ``ULX``/``ULY``; every band file chosen must be in that CRS with its upper
  left corner there (half a pixel of tolerance), or the product is refused.

Each band (``B01`` … ``B12``, ``B8A``) and the ``SCL`` is taken at its finest resolution listed
(10, then 20, then 60 m): the preprocessing resamples onto the scene grid. Band DN are uint16 with
0 = nodata, SCL uint8 ESA classes with 0 = nodata, as in the STAC path's COGs.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime

from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from core.errors import SafeProductError
from tasks.acquisition import Acquisition, BandScaling
from tasks.safe_files import SafeProduct

__all__ = ["ESA_BAND_IDS", "S2_SAFE_KEYS", "footprint_from_pos_list", "s2_acquisition"]

S2_SAFE_KEYS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12", "SCL")
"""The assets read from an L2A product (B10 has no surface reflectance)."""

ESA_BAND_IDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
"""``band_id`` 0 … 12 of ``BOA_ADD_OFFSET`` (ESA's order)."""

_RESOLUTIONS = (10, 20, 60)
_FILE = re.compile(r"_(B\d[\dA]|SCL)_(10|20|60)m$")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _all(root: ET.Element, name: str) -> Iterator[ET.Element]:
    """Every element named ``name`` (any namespace) under ``root``."""
    return (e for e in root.iter() if _local(e.tag) == name)


def _text(root: ET.Element, name: str) -> str | None:
    node = next(_all(root, name), None)
    return None if node is None or not (node.text or "").strip() else (node.text or "").strip()


def _parse(product: SafeProduct, member: str) -> ET.Element:
    # ElementTree resolves no external entities; expat refuses entity-expansion bombs.
    try:
        return ET.fromstring(product.read(member))
    except ET.ParseError as exc:
        raise SafeProductError(f"SAFE product {product.path}: {member} is not XML ({exc})") from None


def footprint_from_pos_list(text: str) -> BaseGeometry:
    """An ``EXT_POS_LIST`` (lat lon pairs) as a polygon in EPSG:4326, split at ±180° when it crosses.

    A ring whose longitudes span more than 180° crosses the antimeridian: it is unwrapped onto
    [0, 360), cut at 180° and the eastern part shifted back by -360°, giving a MultiPolygon.
    """
    values = [float(v) for v in text.split()]
    if len(values) < 8 or len(values) % 2:
        raise ValueError(f"{len(values)} numbers; expected lat lon pairs of a ring")
    lons, lats = values[1::2], values[0::2]
    if max(lons) - min(lons) <= 180:
        return Polygon(zip(lons, lats, strict=True))
    unwrapped = Polygon(zip([x + 360 if x < 0 else x for x in lons], lats, strict=True))
    west = unwrapped.intersection(box(0, -90, 180, 90))
    east = unwrapped.intersection(box(180, -90, 360, 90))
    parts: list[Polygon] = []
    for piece, shift in ((west, 0.0), (east, -360.0)):
        for poly in getattr(piece, "geoms", [piece]):
            if isinstance(poly, Polygon) and not poly.is_empty and poly.area > 0:
                parts.append(Polygon([(x + shift, y) for x, y in poly.exterior.coords]))
    return MultiPolygon(parts) if len(parts) > 1 else parts[0]


def _baseline_major_minor(text: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"N?(\d{1,2})\.?(\d{2})", text.strip().upper())
    return None if m is None else (int(m.group(1)), int(m.group(2)))


def _scaling(product: SafeProduct, mtd: ET.Element, baseline: str) -> tuple[tuple[BandScaling, ...], bool | None]:
    """Per-band scale/offset (``reflectance = DN × scale + offset``); checked against the baseline."""
    where = f"SAFE product {product.path}: MTD_MSIL2A.xml"
    quant_text = _text(mtd, "BOA_QUANTIFICATION_VALUE")
    try:
        quant = float(quant_text) if quant_text is not None else math.nan
    except ValueError:
        quant = math.nan
    if not quant > 0:
        raise SafeProductError(f"{where} has no usable BOA_QUANTIFICATION_VALUE ({quant_text!r})")
    offsets: dict[str, float] = {}
    for node in _all(mtd, "BOA_ADD_OFFSET"):
        try:
            offsets[ESA_BAND_IDS[int(node.get("band_id", ""))]] = float((node.text or "").strip())
        except (ValueError, IndexError):
            raise SafeProductError(f"{where}: unreadable BOA_ADD_OFFSET band_id={node.get('band_id')!r}") from None
    version = _baseline_major_minor(baseline)
    if version is None:
        raise SafeProductError(f"{where}: unreadable PROCESSING_BASELINE {baseline!r}")
    # The preprocessing removes 1000 DN keyed on the baseline; metadata that says otherwise is refused.
    expected = -1000.0 if version >= (4, 0) else 0.0
    for key in S2_SAFE_KEYS[:-1]:
        found = offsets.get(key, 0.0)
        if found != expected:
            raise SafeProductError(
                f"{where}: BOA_ADD_OFFSET of {key} is {found:g} but baseline {baseline} means {expected:g}"
            )
    scaling = tuple(BandScaling(k, 1.0 / quant, expected / quant) for k in S2_SAFE_KEYS[:-1])
    # The files carry the offset when the baseline adds one (False: not removed); before 04.00 there is none.
    return scaling, (False if offsets else None)


def _band_files(product: SafeProduct, mtd: ET.Element) -> dict[str, str]:
    """Canonical key → member of the finest-resolution file the ``IMAGE_FILE`` list names."""
    granule = next(_all(mtd, "Granule"), None)
    if granule is None:
        raise SafeProductError(f"SAFE product {product.path}: MTD_MSIL2A.xml lists no Granule")
    ext = ".tif" if (granule.get("imageFormat") or "").lower() == "geotiff" else ".jp2"
    found: dict[str, tuple[int, str]] = {}
    for node in _all(granule, "IMAGE_FILE"):
        rel = (node.text or "").strip()
        m = _FILE.search(rel)
        if m is None or m.group(1) not in S2_SAFE_KEYS:
            continue
        res = int(m.group(2))
        if m.group(1) not in found or res < found[m.group(1)][0]:
            found[m.group(1)] = (res, rel + ext)
    out = {}
    for key in S2_SAFE_KEYS:
        if key not in found:
            raise SafeProductError(f"SAFE product {product.path}: band {key} missing from MTD_MSIL2A.xml IMAGE_FILE")
        member = found[key][1]
        if not product.has(member):
            raise SafeProductError(f"SAFE product {product.path}: band {key} missing ({member})")
        out[key] = member
    return out


def _tile_geocoding(product: SafeProduct) -> tuple[int, float, float, str]:
    """EPSG, ULX, ULY (10 m Geoposition) of the tile, and the MTD_TL.xml member."""
    tl = next((m for m in product.members if re.fullmatch(r"GRANULE/[^/]+/MTD_TL\.xml", m)), None)
    if tl is None:
        raise SafeProductError(f"SAFE product {product.path}: no GRANULE/*/MTD_TL.xml (tile metadata)")
    root = _parse(product, tl)
    code = _text(root, "HORIZONTAL_CS_CODE") or ""
    m = re.fullmatch(r"EPSG:(\d+)", code)
    pos = next((g for g in _all(root, "Geoposition") if g.get("resolution") == "10"), None)
    try:
        assert m is not None and pos is not None
        return int(m.group(1)), float(_text(pos, "ULX") or ""), float(_text(pos, "ULY") or ""), tl
    except (AssertionError, ValueError):
        raise SafeProductError(f"SAFE product {product.path}: {tl} lacks HORIZONTAL_CS_CODE or 10 m ULX/ULY") from None


def _check_band_geocoding(product: SafeProduct, key: str, member: str, epsg: int, ulx: float, uly: float) -> None:
    import rasterio
    from rasterio.errors import RasterioError

    href = product.href(member)
    try:
        with rasterio.open(href) as ds:
            crs_epsg = ds.crs.to_epsg() if ds.crs is not None else None
            t = ds.transform
    except RasterioError as exc:
        raise SafeProductError(f"SAFE product {product.path}: band {key} unreadable ({member}: {exc})") from None
    if crs_epsg != epsg or abs(t.c - ulx) > abs(t.a) / 2 or abs(t.f - uly) > abs(t.e) / 2:
        raise SafeProductError(
            f"SAFE product {product.path}: band {key} ({member}) is in EPSG:{crs_epsg} at ({t.c:g}, {t.f:g}), "
            f"but MTD_TL.xml places the tile in EPSG:{epsg} at ({ulx:g}, {uly:g})"
        )


def s2_acquisition(product: SafeProduct, source: str) -> Acquisition:
    """The ``S2L2A`` acquisition of an L2A SAFE product (see the module docstring).

    Raises:
        SafeProductError: naming the product and the reason: metadata missing or unreadable, no
            processing baseline, offsets that contradict it, no footprint, a band missing or misplaced.
    """
    mtd = _parse(product, "MTD_MSIL2A.xml")
    where = f"SAFE product {product.path}: MTD_MSIL2A.xml"
    baseline = _text(mtd, "PROCESSING_BASELINE")
    if baseline is None:
        raise SafeProductError(f"{where} has no PROCESSING_BASELINE; the +1000 DN offset cannot be decided")
    start = _text(mtd, "PRODUCT_START_TIME")
    try:
        when = datetime.fromisoformat((start or "").replace("Z", "+00:00"))
    except ValueError:
        raise SafeProductError(f"{where}: unreadable PRODUCT_START_TIME {start!r}") from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    scaling, offset_in_files = _scaling(product, mtd, baseline)
    files = _band_files(product, mtd)
    epsg, ulx, uly, _tl = _tile_geocoding(product)
    for key, member in files.items():
        _check_band_geocoding(product, key, member, epsg, ulx, uly)
    pos = _text(mtd, "EXT_POS_LIST")
    if pos is None:  # without a footprint the product would match every AOI
        raise SafeProductError(f"{where} has no footprint (EXT_POS_LIST)")
    try:
        footprint = footprint_from_pos_list(pos)
    except ValueError as exc:
        raise SafeProductError(f"{where}: unreadable EXT_POS_LIST ({exc})") from None
    cloud = _text(mtd, "Cloud_Coverage_Assessment")
    uri = (_text(mtd, "PRODUCT_URI") or product.name).removesuffix(".SAFE")
    return Acquisition(
        product_id=uri,
        kind="S2L2A",
        platform=(_text(mtd, "SPACECRAFT_NAME") or "unknown").lower(),
        sensing_time=when,
        footprint=footprint,
        assets=tuple((k, product.href(files[k])) for k in S2_SAFE_KEYS),
        source=source,
        processing_baseline=baseline,
        cloud_cover=float(cloud) if cloud is not None else None,
        fingerprint=product.fingerprint(),
        scaling=scaling,
        boa_offset_applied=offset_in_files,
        metadata=(("safe:tile_epsg", str(epsg)), ("safe:product", str(product.path))),
    )
