"""Value objects handed to the inventory merge (pure data, no I/O).

Geometries travel in the UTM CRS they were measured in, named by the record's ``utm_epsg``:
shapely ``MultiPolygon``, valid (repaired upstream with :func:`db.geometry.as_multipolygon`),
coordinates in metres. The merge projects them to EPSG:4326 once, for storage. Areas and lengths
are metres / m² computed in that UTM CRS; centroids are lon/lat degrees (EPSG:4326).

The measured fields of :class:`ObservedLake` are those of :data:`db.attributes.LAKE_ATTRIBUTES`,
in its order (checked when this module is imported; see the contract there).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime

from shapely.geometry import MultiPolygon

from db.attributes import ATTRIBUTES


@dataclass(frozen=True)
class ObservedLake:
    """One water body found in one scene."""

    geometry: MultiPolygon
    """Outline in ``utm_epsg`` (metres), valid."""
    area_m2: float
    """Area in m², computed in ``utm_epsg``."""
    perimeter_m: float
    """Perimeter in m (holes' rings included), ``utm_epsg``."""
    centroid_lon: float
    """Centroid longitude, degrees (EPSG:4326)."""
    centroid_lat: float
    """Centroid latitude, degrees (EPSG:4326)."""
    elevation_m: float | None
    """Median DEM elevation inside the lake, m; None where the DEM was nodata."""
    mean_probability: float | None
    """Mean segmentation probability inside the lake, 0–1; NaN where no pixel had one, None where
    there is no model (an imported inventory)."""
    perimeter_smoothed_m: float | None = None
    """Perimeter in m of the smoothed outline (:func:`tasks.lake_measures.smoothed_perimeter`),
    ``utm_epsg``; None where not measured."""
    area_uncertainty_m2: float | None = None
    """Area uncertainty, ± m² (:func:`tasks.lake_measures.area_uncertainty`); None where unknown."""
    surrounding_slope_deg: float | None = None
    """Mean DEM slope in degrees 0–200 m around the lake; None where the DEM was nodata or absent."""
    probability_entropy: float | None = None
    """Mean binary entropy of the probability inside the lake, bits 0–1; NaN where no pixel had a
    probability, None where there is no model."""
    volume_m3: float | None = None
    """Volume, m³, from the area (:func:`tasks.lake_measures.lake_volume`); None where not computed."""
    volume_uncertainty_m3: float | None = None
    """Volume uncertainty, ± m³; None where the area uncertainty is unknown."""
    attributes: Mapping[str, object] = field(default_factory=dict, hash=False)
    """Source attributes (JSON-serialisable), stored in ``lake_observation.attributes``; e.g. the
    fields of an imported inventory. Left out of the hash: a mapping is not hashable."""
    utm_epsg: int = field(kw_only=True)
    """EPSG code of the UTM CRS of ``geometry`` (and of the measurements)."""


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
    """Where the scene could have seen a lake's place dry, in ``utm_epsg``: the merge marks a lake
    absent only inside it. Dry-capable = valid data (clear S2 ∧ valid S1 ∧ valid DEM) ∧ cloud state
    known from SCL ∧ not snow/ice ∧ no water pixel within one pixel (``tasks.validity``). None when
    the cloud state is unknown (no SCL) or nothing is dry-capable: the scene marks no lake absent."""
    cloud_fraction: float | None
    """Share of observed S2 pixels SCL flags cloud or cloud shadow, 0–1; None when unknown (no SCL)."""
    valid_fraction: float
    lakes: tuple[ObservedLake, ...]
    inputs: Mapping[str, str] = field(default_factory=dict)
    """Extra provenance (hrefs, checksums), stored as JSON."""
    utm_epsg: int = field(kw_only=True)
    """EPSG code of the UTM CRS of ``valid_footprint`` (the scene grid's)."""
    supersede: bool = field(default=False, kw_only=True)
    """A rerun: the AOI's committed scenes of the same S2 product (other keys: another model or
    parameters) are superseded by this one. Their observations stay, marked by
    ``scene.superseded_by``; histories are derived again without them; a lake that only they saw
    leaves the inventory (status ``superseded``). The AOI's parameter check is not applied: the
    rerun is the explicit request for the new parameters."""


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
    """Share of a lake's outline that must lie inside the valid footprint for an absent row, when
    the rest lies beyond the footprint's edge; a lake reached by one of its holes is never absent
    (:func:`db.identity.absent_lakes`)."""


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


MEASURED_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(ObservedLake) if f.name not in ("geometry", "attributes", "utm_epsg")
)
"""The measured fields of :class:`ObservedLake`, in order: :data:`db.attributes.ATTRIBUTES`."""
if MEASURED_FIELDS != ATTRIBUTES:  # a typed record cannot be generated; it must follow the declaration
    raise ImportError(f"ObservedLake's measured fields {MEASURED_FIELDS} differ from db.attributes {ATTRIBUTES}")
