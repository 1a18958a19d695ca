"""Area-of-interest input: parsed and validated at the edge (pydantic), bound as data below."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError, field_validator
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from shapely.geometry.base import BaseGeometry

from core.errors import AoiError
from db.geometry import as_multipolygon

MAX_VERTICES = 10_000
"""AOIs are regions, not coastlines: a cap keeps a hostile file from exhausting memory."""
MAX_AREA_DEG2 = 25.0
"""About 5°×5°: larger windows belong to several AOIs (one per deployment)."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class AoiSpec(BaseModel):
    """A named area of interest, EPSG:4326 (lon, lat)."""

    name: str
    geometry: dict[str, Any]
    """GeoJSON Polygon or MultiPolygon in EPSG:4326."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("AOI name must be 1–63 letters, digits, '-', '_' or '.'")
        return v

    @field_validator("geometry")
    @classmethod
    def _geometry(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            geom = shape(v)
        except Exception as exc:  # shapely raises several types on malformed GeoJSON
            raise ValueError(f"not a GeoJSON geometry: {exc}") from exc
        if not isinstance(geom, Polygon | MultiPolygon):
            raise ValueError(f"AOI must be a Polygon or MultiPolygon, got {geom.geom_type}")
        coords = [c for poly in _polygons(geom) for c in poly.exterior.coords]
        if len(coords) > MAX_VERTICES:
            raise ValueError(f"AOI has {len(coords)} vertices (max {MAX_VERTICES})")
        for x, y, *_ in coords:
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError("AOI has non-finite coordinates")
            if not (-180 <= x <= 180 and -90 <= y <= 90):
                raise ValueError(f"AOI coordinate ({x}, {y}) is not lon/lat (EPSG:4326)")
        if not geom.is_valid:  # the one repair of the inventory (polygonal parts only)
            geom = as_multipolygon(geom) or MultiPolygon()
        if geom.area == 0 or geom.area > MAX_AREA_DEG2:
            raise ValueError(f"AOI area {geom.area:.3g} deg² is outside (0, {MAX_AREA_DEG2}]")
        return dict(mapping(geom))

    @property
    def shape(self) -> BaseGeometry:
        """The geometry as shapely (EPSG:4326)."""
        return shape(self.geometry)


def _polygons(geom: BaseGeometry) -> list[Polygon]:
    """The polygons of a Polygon or MultiPolygon (for counting vertices; no repair here)."""
    return list(geom.geoms) if isinstance(geom, MultiPolygon) else [geom]


def load_aoi(path: Path, name: str | None = None) -> AoiSpec:
    """Read an AOI GeoJSON (Feature, FeatureCollection of one feature, or bare geometry).

    The name comes from ``name``, else the feature's ``name`` property, else the file stem.

    Raises:
        AoiError: unreadable file, not one feature, or a rule broken; one line naming the file
            and the rule.
    """
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AoiError(f"cannot read AOI {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise AoiError(f"AOI {path} is not a GeoJSON object")
    if doc.get("type") == "FeatureCollection":
        features = doc.get("features") or []
        if len(features) != 1:
            raise AoiError(f"AOI {path} must hold exactly one feature, found {len(features)}")
        doc = features[0]
    props: dict[str, Any] = {}
    if doc.get("type") == "Feature":
        props = doc.get("properties") or {}
        doc = doc.get("geometry") or {}
    try:
        return AoiSpec(name=name or str(props.get("name") or path.stem), geometry=doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "AOI"
        # pydantic prefixes messages of our validators with "Value error, ": the rule is what follows.
        raise AoiError(f"AOI {path}: {where}: {first['msg'].removeprefix('Value error, ')}") from exc
