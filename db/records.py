"""Value objects handed to the inventory merge (pure data, no I/O).

Geometries are shapely ``MultiPolygon`` in EPSG:4326, valid (``make_valid`` applied upstream).
Areas and lengths are metres / m² computed in the scene's UTM CRS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from shapely.geometry import MultiPolygon


@dataclass(frozen=True)
class ObservedLake:
    """One water body found in one scene."""

    geometry: MultiPolygon
    """Outline, EPSG:4326."""
    area_m2: float
    """Area in m², computed in the scene's UTM CRS."""
    perimeter_m: float
    """Perimeter in m, UTM."""
    centroid_lon: float
    centroid_lat: float
    elevation_m: float | None
    """Median DEM elevation inside the lake, m; None where the DEM was nodata."""
    mean_probability: float
    """Mean segmentation probability inside the lake, 0–1."""
    attributes: Mapping[str, object] = field(default_factory=dict, hash=False)
    """Source attributes (JSON-serialisable), stored in ``lake_observation.attributes``; e.g. the
    fields of an imported inventory. Left out of the hash: a mapping is not hashable."""


@dataclass(frozen=True)
class SceneResult:
    """Everything one processed scene contributes to the inventory."""

    scene_key: str
    """Ledger key: sha256 of inputs + model version + parameters. Merging a committed key is a no-op."""
    aoi_name: str
    sensing_time: datetime
    """UTC, tz-aware: the Sentinel-2 sensing time."""
    s2_product_id: str
    s1_product_id: str | None
    dem_id: str | None
    model_version: str
    params_hash: str
    valid_footprint: MultiPolygon | None
    """Where the scene could see (clear S2 ∧ valid S1 ∧ valid DEM), EPSG:4326; None if nothing was valid."""
    cloud_fraction: float
    valid_fraction: float
    lakes: tuple[ObservedLake, ...]
    inputs: Mapping[str, str] = field(default_factory=dict)
    """Extra provenance (hrefs, checksums), stored as JSON."""


@dataclass(frozen=True)
class MergeConfig:
    """Tolerances of identity matching and change detection."""

    match_overlap: float = 0.3
    """A polygon continues a lake when intersection / area of the smaller ≥ this."""
    area_rel_tol: float = 0.05
    """A new version needs |Δarea| / area above this …"""
    boundary_tol_m: float = 10.0
    """… and |Δarea| above a shore shift of this many metres (one 10 m pixel), measured on the
    equal-area disc's perimeter 2√(π·area)."""
    absent_to_disappear: int = 2
    """Consecutive absent observations, on different days, before a lake is marked disappeared."""
    min_footprint_cover: float = 0.95
    """Share of a lake's outline that must lie inside the valid footprint for an absent row."""


@dataclass(frozen=True)
class MergeReport:
    """What one scene's merge did."""

    scene_key: str
    noop: bool
    """True when the key was already committed: nothing was written."""
    observations: int = 0
    absent: int = 0
    new_lakes: int = 0
    changed_lakes: int = 0
    disappeared: int = 0
    reappeared: int = 0
    versions_added: int = 0
