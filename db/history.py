"""Pure parts of the inventory merge (no I/O): lake identity and history derived from observations.

Identity (:func:`match_polygons`, :func:`absent_lakes`): a scene's polygons are matched to
existing lakes by overlap, with every area measured in one metric (UTM) CRS.

History (:func:`derive_history`): a lake's versions are a deterministic function of its
observations ordered by sensing time and of its lineage events (split, merge). The merge
recomputes them from *all* of a lake's observations whenever one is added, so the order in
which scenes arrive never changes the result and re-running a scene changes nothing.

Rules (tolerances from :class:`db.records.MergeConfig`):

* The first present observation opens a ``new`` version (``split`` for a lake born by a split).
* A later present observation opens a ``grown`` / ``shrunk`` version only when
  ``|Δarea| > area_rel_tol × area`` **and** ``|Δarea| > 2√(π·area) × boundary_tol_m`` (a shift of
  the whole shore of an equal-area disc by the tolerance), where area is the current version's
  (not the previous observation's, so slow drift still adds up to a change). Otherwise the current version continues unchanged.
* ``absent_to_disappear`` consecutive absent observations on distinct UTC calendar days open a
  ``disappeared`` version starting at the *first* of those absent observations (that is when
  the lake was first seen dry); it keeps the last known outline and attributes. Fewer absent
  observations followed by a present one leave no trace in the history.
* A present observation after disappearance opens a ``reappeared`` version.
* A lake continuing a merge gets a ``merged`` version at the merge time whatever its area change;
  a lake absorbed by a merge ends with a ``merged`` version with status ``disappeared`` (last known
  outline) at the merge time and ignores its later observations.
* Absent observations before the first present one (a backfilled scene older than the lake)
  make no version.
* Observations sharing one sensing time (one acquisition processed twice) count once for the
  history: a present one wins over an absent one, then the greatest ``order_key``.
* Only area decides a change (``reshaped`` is never produced): a shape change of equal area
  continues the current version.

``area_change_m2`` is the change of *water* area from the previous version, where a version with
status ``disappeared`` holds no water: it is ``-area`` for a disappearance and ``+area`` for a
reappearance. ``growth_rate_m2_per_year`` is that change divided by the years (365.25 days)
between the two versions' starts. Areas in m², times tz-aware UTC.
"""

from __future__ import annotations

import math

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from db.records import MergeConfig
from db.schema import SRID

ACTIVE = "active"
DISAPPEARED = "disappeared"

#: Attribute columns shared by ``lake``, ``lake_observation`` and ``lake_version`` besides area/perimeter.
EXTRA_ATTRIBUTES = ("centroid_lon", "centroid_lat", "elevation_m", "mean_probability")

# Lineage roles, seen from the lake whose history is derived.
BORN_BY_SPLIT = "born_by_split"
"""This lake is a child of a split (lineage kind 'split', this lake = child)."""
ABSORBED_OTHERS = "absorbed_others"
"""This lake continued a merge (lineage kind 'merged', this lake = child)."""
ABSORBED_INTO = "absorbed_into"
"""This lake was absorbed by a merge and retired (lineage kind 'merged', this lake = parent)."""

_SECONDS_PER_YEAR = 365.25 * 86400.0


@dataclass(frozen=True)
class Observation:
    """One observation of one lake in one scene (a ``lake_observation`` row)."""

    sensing_time: datetime
    """tz-aware UTC sensing time of the scene."""
    present: bool
    """False: the lake's place was clearly seen and dry (area and perimeter are None)."""
    area_m2: float | None
    """Water area, m², local UTM."""
    perimeter_m: float | None
    """Perimeter, m, local UTM."""
    attributes: Mapping[str, float | None] = field(default_factory=dict)
    """The :data:`EXTRA_ATTRIBUTES` values (centroid in degrees EPSG:4326, elevation m, probability)."""
    scene_id: int | None = None
    observation_id: int | None = None
    """Row id; identifies the outline (geometry) the caller copies into a version."""
    order_key: str = ""
    """Tie-break between observations at the same sensing time (the scene key)."""
    model_version: str | None = None


@dataclass(frozen=True)
class LineageEvent:
    """A split or merge this lake took part in."""

    sensing_time: datetime
    role: str
    """One of :data:`BORN_BY_SPLIT`, :data:`ABSORBED_OTHERS`, :data:`ABSORBED_INTO`."""
    scene_id: int | None = None


@dataclass(frozen=True)
class Version:
    """One derived ``lake_version`` row: valid over ``[valid_from, valid_to)``; ``valid_to`` None = current."""

    valid_from: datetime
    valid_to: datetime | None
    change_kind: str
    status: str
    source: Observation
    """The present observation whose outline and attributes this version carries (last known one
    for a ``disappeared`` version)."""
    area_change_m2: float | None
    growth_rate_m2_per_year: float | None
    scene_id: int | None
    """Scene that opened the version (for ``disappeared``: the first absent one)."""
    model_version: str | None

    @property
    def water_area_m2(self) -> float | None:
        """Water area the version stands for: 0 when disappeared, else the outline's area (m²)."""
        return 0.0 if self.status == DISAPPEARED else self.source.area_m2


@dataclass(frozen=True)
class LakeState:
    """The ``lake`` row implied by a history: current outline source, status and time stamps."""

    status: str
    source: Observation
    """Observation carrying the current version's outline and attributes."""
    first_seen: datetime
    last_seen: datetime
    last_observed: datetime
    n_observations: int


@dataclass(frozen=True)
class LakeHistory:
    """Derived versions (ordered, contiguous) and the lake state; ``state`` None if never seen present."""

    versions: tuple[Version, ...]
    state: LakeState | None


def _ordered_for_history(observations: Iterable[Observation]) -> list[Observation]:
    """Sort by time and keep one observation per sensing time (see module docstring)."""
    ranked = sorted(observations, key=lambda o: (o.sensing_time, o.present, o.order_key))
    kept: list[Observation] = []
    for obs in ranked:
        if kept and kept[-1].sensing_time == obs.sensing_time:
            kept[-1] = obs  # later in the ranking wins
        else:
            kept.append(obs)
    return kept


def _is_change(current: Observation, new: Observation, config: MergeConfig) -> bool:
    if current.area_m2 is None or new.area_m2 is None:
        return False
    delta = abs(new.area_m2 - current.area_m2)
    # Perimeter of the equal-area disc, not the measured one: outlines traced from a raster are
    # staircases whose length overstates the shore by up to 4/π, which would inflate the tolerance.
    perimeter = 2.0 * math.sqrt(math.pi * current.area_m2)
    return delta > config.area_rel_tol * current.area_m2 and delta > perimeter * config.boundary_tol_m


class _Builder:
    """Accumulates contiguous versions; each new one closes the previous one."""

    def __init__(self) -> None:
        self.versions: list[Version] = []

    @property
    def current(self) -> Version | None:
        return self.versions[-1] if self.versions else None

    def open(self, kind: str, status: str, source: Observation, start: Observation) -> None:
        prev = self.current
        water = 0.0 if status == DISAPPEARED else source.area_m2
        change = rate = None
        if prev is not None:
            prev_water = prev.water_area_m2
            if water is not None and prev_water is not None:
                change = water - prev_water
                years = (start.sensing_time - prev.valid_from).total_seconds() / _SECONDS_PER_YEAR
                rate = change / years if years > 0 else None
            self.versions[-1] = replace(prev, valid_to=start.sensing_time)
        self.versions.append(
            Version(
                valid_from=start.sensing_time,
                valid_to=None,
                change_kind=kind,
                status=status,
                source=source,
                area_change_m2=change,
                growth_rate_m2_per_year=rate,
                scene_id=start.scene_id,
                model_version=start.model_version,
            )
        )


def derive_history(
    observations: Sequence[Observation],
    events: Sequence[LineageEvent] = (),
    config: MergeConfig = MergeConfig(),
) -> LakeHistory:
    """Derive one lake's versions and current state from all its observations.

    Args:
        observations: every observation of the lake, any order.
        events: the lake's lineage events (split birth, merges), any order.
        config: change and disappearance tolerances.

    Returns:
        Versions ordered by ``valid_from``, contiguous, the last one open-ended; and the lake state.
    """
    born_by_split = any(e.role == BORN_BY_SPLIT for e in events)
    merge_times = {e.sensing_time for e in events if e.role == ABSORBED_OTHERS}
    absorbed = min((e for e in events if e.role == ABSORBED_INTO), key=lambda e: e.sensing_time, default=None)

    builder = _Builder()
    absent_run: list[Observation] = []
    for obs in _ordered_for_history(observations):
        if absorbed is not None and obs.sensing_time >= absorbed.sensing_time:
            break  # a retired lake's later observations belong to the lake that absorbed it
        current = builder.current
        if not obs.present:
            if current is None or current.status == DISAPPEARED:
                continue
            absent_run.append(obs)
            days = {o.sensing_time.astimezone(UTC).date() for o in absent_run}
            if len(days) >= config.absent_to_disappear:
                builder.open(DISAPPEARED, DISAPPEARED, current.source, absent_run[0])
                absent_run = []
            continue
        absent_run = []
        if current is None:
            builder.open("split" if born_by_split else "new", ACTIVE, obs, obs)
        elif obs.sensing_time in merge_times:
            builder.open("merged", ACTIVE, obs, obs)
        elif current.status == DISAPPEARED:
            builder.open("reappeared", ACTIVE, obs, obs)
        elif _is_change(current.source, obs, config):
            assert obs.area_m2 is not None and current.source.area_m2 is not None
            builder.open("grown" if obs.area_m2 > current.source.area_m2 else "shrunk", ACTIVE, obs, obs)

    current = builder.current
    if absorbed is not None and current is not None:
        start = Observation(absorbed.sensing_time, False, None, None, scene_id=absorbed.scene_id)
        builder.open("merged", DISAPPEARED, current.source, start)
    return LakeHistory(tuple(builder.versions), _state(observations, builder.current))


def _state(observations: Sequence[Observation], current: Version | None) -> LakeState | None:
    present = [o.sensing_time for o in observations if o.present]
    if current is None or not present:
        return None
    return LakeState(
        status=current.status,
        source=current.source,
        first_seen=min(present),
        last_seen=max(present),
        last_observed=max(o.sensing_time for o in observations),
        n_observations=len(observations),
    )


# --- Identity: which lake a polygon continues (pure, geometries in one metric CRS) ---


def as_multipolygon(geometry: BaseGeometry | None) -> MultiPolygon | None:
    """Repair a geometry into a valid 2-D MultiPolygon (polygonal parts only); None when empty."""
    if geometry is None or geometry.is_empty:
        return None
    geometry = shapely.force_2d(geometry)
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry, method="structure", keep_collapsed=False)
    parts = [g for g in shapely.get_parts(geometry) if isinstance(g, (Polygon, MultiPolygon))]
    polygons = [p for g in parts for p in shapely.get_parts(g) if not p.is_empty and p.area > 0]
    if not polygons:
        return None
    result = MultiPolygon(polygons)
    return result if result.is_valid else as_multipolygon(shapely.make_valid(result, method="structure"))


@lru_cache(maxsize=16)
def metric_transformer(utm_epsg: int) -> Transformer:
    """EPSG:4326 → ``utm_epsg`` (lon/lat order); ValueError unless it is projected in metres."""
    crs = CRS.from_epsg(utm_epsg)
    if not crs.is_projected or crs.axis_info[0].unit_name not in ("metre", "meter"):
        raise ValueError(f"utm_epsg {utm_epsg} is not a projected CRS in metres")
    return Transformer.from_crs(SRID, utm_epsg, always_xy=True)


def project(geometries: Sequence[BaseGeometry], utm_epsg: int) -> list[BaseGeometry]:
    """Project EPSG:4326 geometries to ``utm_epsg`` (metres); repaired if projection broke them."""
    if not geometries:
        return []
    transformer = metric_transformer(utm_epsg)

    def _xy(coords: np.ndarray) -> np.ndarray:
        return np.column_stack(transformer.transform(coords[:, 0], coords[:, 1]))

    out = shapely.transform(np.asarray(geometries, dtype=object), _xy)
    bad = ~shapely.is_valid(out)
    out[bad] = shapely.make_valid(out[bad])
    return list(out)


@dataclass(frozen=True)
class MatchPlan:
    """How one scene's polygons relate to existing lakes (indices into the polygon list)."""

    continues: Mapping[int, int]
    """polygon index → lake id it continues."""
    new: tuple[int, ...]
    """polygon indices that become new lakes (including split children)."""
    merges: tuple[tuple[int, int], ...]
    """(absorbed lake id, continuing lake id)."""
    splits: tuple[tuple[int, int], ...]
    """(parent lake id, polygon index of the new child lake)."""

    @property
    def matched_lakes(self) -> set[int]:
        """Lakes that this scene saw (continued or absorbed)."""
        return set(self.continues.values()) | {absorbed for absorbed, _ in self.merges}


def match_polygons(
    polygons: Sequence[BaseGeometry], lakes: Mapping[int, BaseGeometry], min_overlap: float
) -> MatchPlan:
    """Decide identity by overlap: intersection / area of the smaller ≥ ``min_overlap``.

    Geometries must share one metric CRS. Each matched lake picks its heir, the largest polygon
    matching it (ties: larger intersection, lower index). A polygon heir of several lakes continues
    the largest of them and the others merge into it; a polygon matching lakes but heir of none is
    split off the lake it overlaps most and becomes a new lake.
    """
    lake_ids = list(lakes)
    lake_geoms = np.asarray([lakes[i] for i in lake_ids], dtype=object)
    poly_geoms = np.asarray(polygons, dtype=object)
    edges: dict[int, list[tuple[int, float]]] = {}  # polygon → [(lake position, intersection m²)]
    if len(lake_ids) and len(poly_geoms):
        pi, li = shapely.STRtree(lake_geoms).query(poly_geoms, predicate="intersects")
        inter = shapely.area(shapely.intersection(poly_geoms[pi], lake_geoms[li]))
        smaller = np.minimum(shapely.area(poly_geoms[pi]), shapely.area(lake_geoms[li]))
        ok = (smaller > 0) & (inter >= min_overlap * smaller)
        for p, lpos, a in zip(pi[ok], li[ok], inter[ok], strict=True):
            edges.setdefault(int(p), []).append((int(lpos), float(a)))

    poly_area = shapely.area(poly_geoms) if len(poly_geoms) else np.zeros(0)
    lake_area = shapely.area(lake_geoms) if len(lake_ids) else np.zeros(0)
    heir: dict[int, tuple[float, float, int]] = {}  # lake position → best (area, intersection, -index)
    for p, matches in edges.items():
        for lpos, a in matches:
            rank = (float(poly_area[p]), a, -p)
            if lpos not in heir or rank > heir[lpos]:
                heir[lpos] = rank
    heirs_of: dict[int, list[int]] = {}
    for lpos, (_, _, neg_p) in heir.items():
        heirs_of.setdefault(-neg_p, []).append(lpos)

    continues: dict[int, int] = {}
    new: list[int] = []
    merges: list[tuple[int, int]] = []
    splits: list[tuple[int, int]] = []
    for p in range(len(poly_geoms)):
        if p in heirs_of:
            ranked = sorted(heirs_of[p], key=lambda lpos: (-lake_area[lpos], lake_ids[lpos]))
            continues[p] = lake_ids[ranked[0]]
            merges.extend((lake_ids[other], lake_ids[ranked[0]]) for other in ranked[1:])
        else:
            new.append(p)
            if p in edges:
                parent = max(edges[p], key=lambda e: (e[1], -lake_ids[e[0]]))[0]
                splits.append((lake_ids[parent], p))
    return MatchPlan(continues, tuple(new), tuple(merges), tuple(splits))


def absent_lakes(lakes: Mapping[int, BaseGeometry], footprint: BaseGeometry, min_cover: float) -> list[int]:
    """Lakes whose outline lies inside the valid footprint (share of area ≥ ``min_cover``); metric CRS."""
    if not lakes:
        return []
    ids = np.asarray(list(lakes))
    geoms = np.asarray(list(lakes.values()), dtype=object)
    shapely.prepare(footprint)
    cover = np.where(shapely.covers(footprint, geoms), 1.0, 0.0)
    partial = (cover == 0.0) & shapely.intersects(footprint, geoms)
    if partial.any():
        areas = shapely.area(geoms[partial])
        inside = shapely.area(shapely.intersection(geoms[partial], footprint))
        cover[partial] = np.divide(inside, areas, out=np.zeros_like(inside), where=areas > 0)
    return [int(i) for i in ids[cover >= min_cover]]
