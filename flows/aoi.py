"""Area-of-interest input: parsed and validated at the edge (pydantic), bound as data below."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import shapely
from pydantic import BaseModel, ValidationError, field_validator
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from shapely.geometry.base import BaseGeometry

from core.errors import AoiError, InputError
from core.names import check_aoi_name
from db.geometry import as_multipolygon
from tasks.zones import partition_aoi

MAX_VERTICES = 10_000
"""Vertices of all rings, holes included: AOIs are regions, not coastlines, and a cap keeps a
hostile file from exhausting memory (or filling an error message)."""
MAX_AREA_DEG2 = 25.0
"""About 5°×5°: larger windows belong to several AOIs (one per deployment). The grid cap of
:data:`tasks.grid.MAX_GRID_PIXELS` is usually the tighter of the two; it applies to each UTM zone
part of an AOI across zones and to their total (:func:`tasks.zones.partition_aoi`)."""
MAX_AOI_BYTES = 4 * 1024 * 1024
"""Largest AOI file read, bytes: 10 000 vertices take well under 1 MiB of GeoJSON; at most this
much is ever read, so ``--aoi /dev/zero`` fails at once."""
MAX_JSON_DEPTH = 16
"""Nesting of arrays and objects a GeoJSON AOI needs at most (a FeatureCollection of one
MultiPolygon is 7 deep)."""


class AoiSpec(BaseModel):
    """A named area of interest, EPSG:4326 (lon, lat)."""

    name: str
    geometry: dict[str, Any]
    """GeoJSON Polygon or MultiPolygon in EPSG:4326."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_aoi_name(v)  # the rule import-inventory applies too

    @field_validator("geometry")
    @classmethod
    def _geometry(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            geom = shape(v)
        except Exception as exc:  # shapely raises several types on malformed GeoJSON
            raise ValueError(f"not a GeoJSON geometry: {exc}") from exc
        if not isinstance(geom, Polygon | MultiPolygon):
            raise ValueError(f"AOI must be a Polygon or MultiPolygon, got {geom.geom_type}")
        vertices = int(shapely.get_num_coordinates(geom))  # every ring: exteriors and holes
        if vertices > MAX_VERTICES:
            raise ValueError(f"AOI has {vertices} vertices, holes included (max {MAX_VERTICES})")
        for x, y, *_ in shapely.get_coordinates(geom).tolist():
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError("AOI has non-finite coordinates")
            if not (-180 <= x <= 180 and -90 <= y <= 90):
                raise ValueError(f"AOI coordinate ({x}, {y}) is not lon/lat (EPSG:4326)")
        if not geom.is_valid:  # the one repair of the inventory (polygonal parts only)
            geom = as_multipolygon(geom) or MultiPolygon()
        if geom.area == 0 or geom.area > MAX_AREA_DEG2:
            raise ValueError(f"AOI area {geom.area:.3g} deg² is outside (0, {MAX_AREA_DEG2}]")
        try:
            # Refuses a grid larger than the pipeline's memory budget: per UTM zone part and in total.
            partition_aoi(geom)
        except InputError as exc:
            raise ValueError(str(exc)) from exc
        return dict(mapping(geom))

    @property
    def shape(self) -> BaseGeometry:
        """The geometry as shapely (EPSG:4326)."""
        return shape(self.geometry)


def load_aoi(path: Path, name: str | None = None) -> AoiSpec:
    """Read an AOI GeoJSON (Feature, FeatureCollection of one feature, or bare geometry).

    The name comes from ``name``, else the feature's ``name`` property, else the file stem.

    Raises:
        AoiError: unreadable file, not one feature, or a rule broken; one line naming the file
            and the rule.
    """
    doc = _read_json(path)
    if not isinstance(doc, dict):
        raise AoiError(f"AOI {path} is not a GeoJSON object (found a JSON {_json_kind(doc)})")
    if doc.get("type") == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list) or len(features) != 1:
            found = len(features) if isinstance(features, list) else "no list of"
            raise AoiError(f"AOI {path} must hold exactly one feature, found {found}")
        doc = features[0]
        if not isinstance(doc, dict):
            raise AoiError(f"AOI {path}: the feature is a JSON {_json_kind(doc)}, not an object")
    props: object = {}
    if doc.get("type") == "Feature":
        props = doc.get("properties") or {}
        doc = doc.get("geometry") or {}
        if not isinstance(props, dict) or not isinstance(doc, dict):
            raise AoiError(f"AOI {path}: the feature's properties and geometry must be JSON objects")
    assert isinstance(props, dict)
    try:
        return AoiSpec(name=name or str(props.get("name") or path.stem), geometry=doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "AOI"
        # pydantic prefixes messages of our validators with "Value error, ": the rule is what follows.
        raise AoiError(f"AOI {path}: {where}: {first['msg'].removeprefix('Value error, ')}") from exc


def _read_json(path: Path) -> object:
    """The file's JSON, reading at most :data:`MAX_AOI_BYTES` + 1 bytes and checking the nesting."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_AOI_BYTES + 1)
    except OSError as exc:
        raise AoiError(f"cannot read AOI {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_AOI_BYTES:
        raise AoiError(f"AOI {path} is larger than {MAX_AOI_BYTES // (1024 * 1024)} MiB (an AOI is one region)")
    try:
        doc = json.loads(raw)
    except RecursionError as exc:  # the parser's own stack, long before our depth check
        raise AoiError(f"AOI {path} nests deeper than {MAX_JSON_DEPTH} levels") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AoiError(f"cannot read AOI {path}: not JSON: {exc}") from exc
    if _depth(doc) > MAX_JSON_DEPTH:
        raise AoiError(f"AOI {path} nests deeper than {MAX_JSON_DEPTH} levels")
    return doc


def _depth(doc: object) -> int:
    """Nesting depth of arrays and objects (iterative: a deep document cannot exhaust the stack)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:  # deeper is refused anyway: no need to walk on
                stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _json_kind(doc: object) -> str:
    """``list``, ``string``, ``number``, ``null`` … as JSON names them."""
    if doc is None:
        return "null"
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(doc), "value")
