"""A Sentinel-1 GRD SAFE product (folder or zip) as an :class:`~tasks.acquisition.Acquisition`.

From ``manifest.safe``: the platform (``familyName`` + ``number``: ``sentinel-1a``), the product
type (only ``GRD`` is read), the sensing start (``safe:startTime``, UTC), the footprint
(``gml:coordinates``, "lat,lon" pairs, EPSG:4326; split at ±180° when it crosses it) and the
data objects' ``fileLocation`` hrefs, from which each polarisation's files are taken:

* ``measurement/s1?-*-grd-<pol>-*.tiff``: uint16 amplitude DN in radar geometry, GCPs only;
* ``annotation/s1?-*-grd-<pol>-*.xml``: the image size and the geolocation grid;
* ``annotation/calibration/calibration-*-<pol>-*.xml``: the ``sigmaNought`` LUT;
* ``annotation/calibration/noise-*-<pol>-*.xml``: the thermal noise (IPF ≥ 2.9 layout).

They become the assets ``vv``/``vh``, ``annotation-<pol>``, ``calibration-<pol>`` and
``noise-<pol>`` of an ``S1GRD`` acquisition that declares no calibrated scale, so
:func:`tasks.s1_read.read_s1_acquisition` reads it the way it reads a STAC GRD item (σ⁰ from the
LUT, geocoded through the geolocation grid by :mod:`tasks.s1_grd`), with the noise removed first.
VV and VH are both required: the segmenter takes both.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from core.errors import SafeProductError
from tasks.acquisition import Acquisition
from tasks.safe_files import SafeProduct
from tasks.safe_s2 import footprint_from_pos_list

__all__ = ["S1_SAFE_POLARISATIONS", "s1_acquisition"]

S1_SAFE_POLARISATIONS = ("vv", "vh")

_PATTERNS = {
    "": r"measurement/s1[a-d]-[a-z0-9]+-grd-{pol}-[^/]+\.tiff?",
    "annotation-": r"annotation/s1[a-d]-[a-z0-9]+-grd-{pol}-[^/]+\.xml",
    "calibration-": r"annotation/calibration/calibration-s1[a-d]-[a-z0-9]+-grd-{pol}-[^/]+\.xml",
    "noise-": r"annotation/calibration/noise-s1[a-d]-[a-z0-9]+-grd-{pol}-[^/]+\.xml",
}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _first_text(root: ET.Element, name: str) -> str | None:
    for e in root.iter():
        if _local(e.tag) == name and (e.text or "").strip():
            return (e.text or "").strip()
    return None


def s1_acquisition(product: SafeProduct, source: str) -> Acquisition:
    """The ``S1GRD`` acquisition of a GRD SAFE product (see the module docstring).

    Raises:
        SafeProductError: naming the product and the reason: an unreadable manifest, a product
            type other than GRD, no start time or footprint, or a polarisation's measurement,
            annotation, calibration or noise file missing.
    """
    where = f"SAFE product {product.path}: manifest.safe"
    try:
        manifest = ET.fromstring(product.read("manifest.safe"))
    except ET.ParseError as exc:
        raise SafeProductError(f"{where} is not XML ({exc})") from None
    product_type = _first_text(manifest, "productType")
    if product_type != "GRD":
        raise SafeProductError(f"{where}: product type {product_type!r}; only Sentinel-1 GRD is read")
    start = _first_text(manifest, "startTime")
    try:
        when = datetime.fromisoformat(start or "")
    except ValueError:
        raise SafeProductError(f"{where}: unreadable startTime {start!r}") from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    coords = _first_text(manifest, "coordinates")
    try:
        footprint = footprint_from_pos_list((coords or "").replace(",", " "))
    except ValueError as exc:
        raise SafeProductError(f"{where}: no usable footprint (gml:coordinates: {exc})") from None
    number = _first_text(manifest, "number") or ""
    hrefs = [(e.get("href") or "").removeprefix("./") for e in manifest.iter() if _local(e.tag) == "fileLocation"]
    assets: list[tuple[str, str]] = []
    for pol in S1_SAFE_POLARISATIONS:
        for prefix, pattern in _PATTERNS.items():
            regex = re.compile(pattern.format(pol=pol))
            member = next((h for h in hrefs if regex.fullmatch(h)), None)
            what = f"{prefix or 'measurement-'}{pol}".rstrip("-")
            if member is None:
                raise SafeProductError(f"{where} lists no {what} file ({pattern.format(pol=pol)})")
            if not product.has(member):
                raise SafeProductError(f"SAFE product {product.path}: {what} file missing ({member})")
            assets.append((f"{prefix}{pol}", product.href(member)))
    return Acquisition(
        product_id=product.product_id,
        kind="S1GRD",
        platform=f"sentinel-1{number.lower()}",
        sensing_time=when,
        footprint=footprint,
        assets=tuple(assets),
        source=source,
        fingerprint=product.fingerprint(),
        metadata=(("safe:product", str(product.path)),),
    )
