"""Pure parts of the inventory merge (no I/O): lake identity and history derived from observations.

Identity (:func:`match_polygons`, :func:`absent_lakes`): a scene's polygons are matched to
existing lakes by overlap, with every area measured in one metric (UTM) CRS.
:func:`match_outlines` gives the same plan from EPSG:4326 outlines, projecting and intersecting
only the pairs whose overlap is not evident (identical or covering outlines, or disjoint ones).

History (:func:`derive_history`): a lake's versions are a deterministic function of its
observations ordered by sensing time and of its lineage events (split, merge); whichever order
scenes arrive in, and however often one is re-run, the result is the same.
:func:`extend_histories` applies the same rules to one observation per lake that is newer than
all of the lake's others, from the end of each history alone (the merge's fast path, vectorised);
it declines the cases that need the whole series, which the merge derives again in full.

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
from datetime import UTC, datetime, timedelta
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


def area_change(
    prev_water: float | None, water: float | None, prev_from: datetime, start: datetime
) -> tuple[float | None, float | None]:
    """(Δ water area in m², growth rate in m²/year) of a version starting at ``start`` after one
    starting at ``prev_from``; None where an area is unknown, rate None for a zero interval."""
    if water is None or prev_water is None:
        return None, None
    change = water - prev_water
    years = (start - prev_from).total_seconds() / _SECONDS_PER_YEAR
    return change, (change / years if years > 0 else None)


def _is_change(current: Observation, new: Observation, config: MergeConfig) -> bool:
    return _is_area_change(current.area_m2, new.area_m2, config)


def _is_area_change(current: float | None, new: float | None, config: MergeConfig) -> bool:
    if current is None or new is None:
        return False
    delta = abs(new - current)
    # Perimeter of the equal-area disc, not the measured one: outlines traced from a raster are
    # staircases whose length overstates the shore by up to 4/π, which would inflate the tolerance.
    perimeter = 2.0 * math.sqrt(math.pi * current)
    return delta > config.area_rel_tol * current and delta > perimeter * config.boundary_tol_m


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
            change, rate = area_change(prev.water_area_m2, water, prev.valid_from, start.sensing_time)
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


@dataclass(frozen=True)
class HistoryTip:
    """The end of a lake's derived history, as its ``lake`` row records it."""

    status: str
    """Status of the current version."""
    area_m2: float | None
    """Area (m², UTM) of the current version's outline (the last known one when disappeared)."""
    first_seen: datetime
    last_seen: datetime
    last_observed: datetime
    n_observations: int


@dataclass(frozen=True)
class HistoryTips:
    """Tips of several lakes column by column (index i is one lake): what extending needs."""

    status: np.ndarray
    """Status of the current version (str objects)."""
    area_m2: np.ndarray
    """float64, m² of the current version's outline; NaN when unknown."""
    last_seen_us: np.ndarray
    """int64 microseconds since 1970-01-01 UTC."""
    last_observed_us: np.ndarray
    """int64 microseconds since 1970-01-01 UTC."""

    def take(self, index: np.ndarray) -> HistoryTips:
        """The tips at ``index`` (integer positions)."""
        return HistoryTips(
            self.status[index], self.area_m2[index], self.last_seen_us[index], self.last_observed_us[index]
        )

    @classmethod
    def of(cls, tips: Sequence[HistoryTip]) -> HistoryTips:
        """Columns of the given tips."""
        return cls(
            np.asarray([t.status for t in tips], dtype=object),
            np.asarray([t.area_m2 for t in tips], dtype=float),
            np.asarray([micros(t.last_seen) for t in tips], dtype=np.int64),
            np.asarray([micros(t.last_observed) for t in tips], dtype=np.int64),
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(t: datetime) -> int:
    """Exact microseconds since 1970-01-01 UTC of a tz-aware time."""
    return (t - _EPOCH) // timedelta(microseconds=1)


CONTINUES = ""
"""Kind returned by :func:`extend_histories` when the current version continues."""


def extend_histories(
    tips: HistoryTips, when: datetime, present: np.ndarray, area_m2: np.ndarray, config: MergeConfig = MergeConfig()
) -> np.ndarray:
    """:func:`derive_history`'s rules applied to one new observation per lake, from the tips alone.

    Decides the common cases of an observation newer than all of the lake's others; None asks for
    the whole history to be derived again: the observation is not strictly newer than the lake's
    last one (backfill, or one sensing time seen twice), an area is unknown, the lake comes back
    (present while disappeared), or an absent observation may complete a run of absences (the
    previous observation was absent too, or one absence suffices). Lineage events at or after
    ``when`` are the caller's to rule out.

    Args:
        tips: the lakes' histories so far.
        when: sensing time of the new observations (tz-aware).
        present: bool per lake; False: seen dry.
        area_m2: float64 per lake, the observed area (m², UTM); ignored where absent.
        config: change and disappearance tolerances.

    Returns:
        Object array per lake: ``"grown"`` / ``"shrunk"`` (a version opens with the observation as
        its outline), :data:`CONTINUES`, or None (derive the whole history).
    """
    present = np.asarray(present, dtype=bool)
    area = np.asarray(area_m2, dtype=float)
    prev = tips.area_m2
    active = tips.status == ACTIVE
    newer = (micros(when) > tips.last_observed_us) & ~np.isnan(prev)
    with np.errstate(invalid="ignore"):
        delta = np.abs(area - prev)
        # Same arithmetic as _is_area_change, element by element (IEEE: identical results).
        changed = (delta > config.area_rel_tol * prev) & (delta > 2.0 * np.sqrt(np.pi * prev) * config.boundary_tol_m)
        grown = area > prev
    kind = np.full(len(prev), None, dtype=object)
    wet = newer & present & active & ~np.isnan(area)
    kind[wet] = CONTINUES
    kind[wet & changed & grown] = "grown"
    kind[wet & changed & ~grown] = "shrunk"
    # Seen dry once after being seen wet, or dry again while disappeared: no trace in the history.
    run_may_end = (tips.last_seen_us < tips.last_observed_us) | (config.absent_to_disappear <= 1)
    dry = newer & ~present & ((active & ~run_may_end) | (tips.status == DISAPPEARED))
    kind[dry] = CONTINUES
    return kind


@dataclass(frozen=True)
class Extension:
    """What one more observation does to a history: the version it opens, and the new tip."""

    change_kind: str | None
    """Kind of the version the observation opens (with itself as outline source); None: the
    current version continues."""
    tip: HistoryTip


def extend_history(tip: HistoryTip, obs: Observation, config: MergeConfig = MergeConfig()) -> Extension | None:
    """:func:`extend_histories` for one lake, with the new tip; None: derive the whole history."""
    area = np.nan if obs.area_m2 is None else obs.area_m2
    tips = HistoryTips.of([tip])
    (kind,) = extend_histories(tips, obs.sensing_time, np.array([obs.present]), np.array([area]), config)
    if kind is None:
        return None
    when = obs.sensing_time
    if not obs.present:
        return Extension(None, replace(tip, last_observed=when, n_observations=tip.n_observations + 1))
    return Extension(
        kind or None,
        replace(
            tip,
            area_m2=obs.area_m2 if kind else tip.area_m2,
            last_seen=when,
            last_observed=when,
            n_observations=tip.n_observations + 1,
        ),
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


def as_multipolygons(geometries: Sequence[BaseGeometry | None]) -> list[MultiPolygon | None]:
    """:func:`as_multipolygon` of each geometry; valid 2-D MultiPolygons whose parts all have an
    area are recognised in bulk and kept as they are (same object, same coordinates)."""
    geoms = np.empty(len(geometries), dtype=object)
    geoms[:] = list(geometries)
    ok = (shapely.get_type_id(geoms) == 6) & ~shapely.is_empty(geoms) & ~shapely.has_z(geoms)
    ok &= shapely.is_valid(geoms) & (shapely.area(geoms) > 0)
    several = ok & (shapely.get_num_geometries(geoms) > 1)  # one part: its area is the whole's
    if several.any():
        parts, owner = shapely.get_parts(geoms[several], return_index=True)
        degenerate = shapely.is_empty(parts) | ~(shapely.area(parts) > 0)
        ok[np.flatnonzero(several)[np.unique(owner[degenerate])]] = False
    return [g if keep else as_multipolygon(g) for g, keep in zip(geoms.tolist(), ok.tolist(), strict=True)]


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
        inter, ok = _overlaps(poly_geoms[pi], lake_geoms[li], min_overlap)
        for p, lpos, a in zip(pi[ok], li[ok], inter[ok], strict=True):
            edges.setdefault(int(p), []).append((int(lpos), float(a)))
    poly_area = shapely.area(poly_geoms) if len(poly_geoms) else np.zeros(0)
    lake_area = shapely.area(lake_geoms) if len(lake_ids) else np.zeros(0)
    return _plan(len(poly_geoms), lake_ids, edges, poly_area, lake_area)


def _overlaps(polygons: np.ndarray, lakes: np.ndarray, min_overlap: float) -> tuple[np.ndarray, np.ndarray]:
    """Intersection areas of the pairs and whether each pair matches (metric CRS)."""
    inter = shapely.area(shapely.intersection(polygons, lakes))
    smaller = np.minimum(shapely.area(polygons), shapely.area(lakes))
    return inter, (smaller > 0) & (inter >= min_overlap * smaller)


def _plan(
    n_polygons: int,
    lake_ids: Sequence[int],
    edges: Mapping[int, list[tuple[int, float]]],
    poly_area: np.ndarray,
    lake_area: np.ndarray,
) -> MatchPlan:
    """The plan from the matching pairs (polygon → [(lake position, intersection m²)]) and areas (m²).

    A polygon and a lake matching only each other simply continue; areas and intersections rank
    the candidates around a polygon or lake with several matches, and are read only there.
    """
    lake_degree: dict[int, int] = {}
    for matches in edges.values():
        for lpos, _ in matches:
            lake_degree[lpos] = lake_degree.get(lpos, 0) + 1
    continues: dict[int, int] = {}
    crowded: dict[int, list[tuple[int, float]]] = {}
    for p, matches in edges.items():
        if len(matches) == 1 and lake_degree[matches[0][0]] == 1:
            continues[p] = lake_ids[matches[0][0]]
        else:
            crowded[p] = matches

    heir: dict[int, tuple[float, float, int]] = {}  # lake position → best (area, intersection, -index)
    for p, matches in crowded.items():
        for lpos, a in matches:
            rank = (float(poly_area[p]), a, -p)
            if lpos not in heir or rank > heir[lpos]:
                heir[lpos] = rank
    heirs_of: dict[int, list[int]] = {}
    for lpos, (_, _, neg_p) in heir.items():
        heirs_of.setdefault(-neg_p, []).append(lpos)

    merges: list[tuple[int, int]] = []
    splits: list[tuple[int, int]] = []
    for p in sorted(crowded):
        if p in heirs_of:
            ranked = sorted(heirs_of[p], key=lambda lpos: (-lake_area[lpos], lake_ids[lpos]))
            continues[p] = lake_ids[ranked[0]]
            merges.extend((lake_ids[other], lake_ids[ranked[0]]) for other in ranked[1:])
        else:
            parent = max(crowded[p], key=lambda e: (e[1], -lake_ids[e[0]]))[0]
            splits.append((lake_ids[parent], p))
    new = tuple(p for p in range(n_polygons) if p not in continues)
    return MatchPlan(dict(sorted(continues.items())), new, tuple(merges), tuple(splits))


# Shortcuts of match_outlines, decided in EPSG:4326: identical outlines, or one covering the other,
# overlap fully in UTM too, and outlines that do not touch do not overlap. Only the vertices are
# projected, so an edge bends between the two CRSs by at most L²/8R (0.2 mm for a 100 m edge, 2 cm
# for 1 km): the shortcuts can only differ from measuring in UTM for outlines within that distance
# of each other whose overlap ratio sits on the threshold. Thresholds near 0 or 1 and outlines
# under about a square metre are measured.
_SHORTCUT_OVERLAP = (1e-3, 0.999)
_SHORTCUT_MIN_AREA_DEG2 = 1e-10


def match_outlines(
    polygons: Sequence[BaseGeometry], lakes: Mapping[int, BaseGeometry], utm_epsg: int, min_overlap: float
) -> MatchPlan:
    """:func:`match_polygons` for EPSG:4326 outlines, with overlaps measured in ``utm_epsg``.

    Gives the plan of ``match_polygons(project(polygons), project(lakes))`` but projects and
    intersects only where it can change the outcome: a pair of identical outlines, or of one
    covering the other, matches; a pair that does not touch does not; every other pair that the
    bounding boxes propose is measured in metres, and so is every pair around a polygon or lake
    with several matches (their areas rank the candidates).
    """
    lake_ids = list(lakes)
    if not lake_ids or not len(polygons):
        return MatchPlan({}, tuple(range(len(polygons))), (), ())
    if not _SHORTCUT_OVERLAP[0] <= min_overlap <= _SHORTCUT_OVERLAP[1]:
        lakes_m = dict(zip(lake_ids, project([lakes[i] for i in lake_ids], utm_epsg), strict=True))
        return match_polygons(project(list(polygons), utm_epsg), lakes_m, min_overlap)
    lake_geoms = np.asarray([lakes[i] for i in lake_ids], dtype=object)
    poly_geoms = np.asarray(polygons, dtype=object)
    pi, li = shapely.STRtree(lake_geoms).query(poly_geoms)  # bounding boxes only
    matched = shapely.equals_exact(poly_geoms[pi], lake_geoms[li], 0.0)
    rest = np.flatnonzero(~matched)
    p_geoms, l_geoms = poly_geoms[pi[rest]], lake_geoms[li[rest]]
    tiny = np.minimum(shapely.area(p_geoms), shapely.area(l_geoms)) < _SHORTCUT_MIN_AREA_DEG2
    cover, touch = np.zeros(len(rest), dtype=bool), np.zeros(len(rest), dtype=bool)
    pb, lb = shapely.bounds(p_geoms), shapely.bounds(l_geoms)
    p_holds_l = (pb[:, :2] <= lb[:, :2]).all(axis=1) & (pb[:, 2:] >= lb[:, 2:]).all(axis=1)
    l_holds_p = (lb[:, :2] <= pb[:, :2]).all(axis=1) & (lb[:, 2:] >= pb[:, 2:]).all(axis=1)
    todo = ~tiny & p_holds_l  # only a box holding the other's box can cover it
    cover[todo] = shapely.covers(p_geoms[todo], l_geoms[todo])  # grown
    todo = ~tiny & ~cover & l_holds_p
    cover[todo] = shapely.covers(l_geoms[todo], p_geoms[todo])  # shrunk
    todo = ~tiny & ~cover
    touch[todo] = shapely.intersects(p_geoms[todo], l_geoms[todo])  # neither: measure
    matched[rest[cover]] = True
    measure = rest[tiny | touch]
    metric = _Projected(poly_geoms, lake_geoms, utm_epsg)
    if len(measure):
        _, matched[measure] = _overlaps(metric.polygons(pi[measure]), metric.lakes(li[measure]), min_overlap)
    pi, li = pi[matched], li[matched]

    # A polygon and a lake matching only each other continue; pairs around a polygon or lake with
    # several matches rank by areas, so those are measured exactly and planned one by one.
    crowded = _repeated(pi, len(poly_geoms))[pi] | _repeated(li, len(lake_ids))[li]
    lake_array = np.asarray(lake_ids, dtype=object)
    continues = dict(zip(pi[~crowded].tolist(), lake_array[li[~crowded]].tolist(), strict=True))
    if not crowded.any():
        new = tuple(np.setdiff1d(np.arange(len(poly_geoms)), pi).tolist())
        return MatchPlan(dict(sorted(continues.items())), new, (), ())
    cp, cl = pi[crowded], li[crowded]
    inter, _ = _overlaps(metric.polygons(cp), metric.lakes(cl), min_overlap)
    poly_area, lake_area = np.zeros(len(poly_geoms)), np.zeros(len(lake_ids))
    poly_area[np.unique(cp)] = shapely.area(metric.polygons(np.unique(cp)))
    lake_area[np.unique(cl)] = shapely.area(metric.lakes(np.unique(cl)))
    edges: dict[int, list[tuple[int, float]]] = {}
    for p, lpos, a in zip(cp.tolist(), cl.tolist(), inter.tolist(), strict=True):
        edges.setdefault(p, []).append((lpos, a))
    crowded_plan = _plan(len(poly_geoms), lake_ids, edges, poly_area, lake_area)
    continues.update(crowded_plan.continues)
    new = tuple(p for p in crowded_plan.new if p not in continues)
    return MatchPlan(dict(sorted(continues.items())), new, crowded_plan.merges, crowded_plan.splits)


def _repeated(index: np.ndarray, size: int) -> np.ndarray:
    """Lookup table over ``range(size)``: which values occur more than once in ``index``."""
    return np.bincount(index, minlength=size) > 1


class _Projected:
    """Lazily projected polygons and lakes (each projected once, on first use)."""

    def __init__(self, polygons: np.ndarray, lakes: np.ndarray, utm_epsg: int) -> None:
        self._src = (polygons, lakes)
        self._out: tuple[dict[int, BaseGeometry], dict[int, BaseGeometry]] = ({}, {})
        self._epsg = utm_epsg

    def _get(self, which: int, index: np.ndarray) -> np.ndarray:
        cache = self._out[which]
        missing = [i for i in np.unique(index).tolist() if i not in cache]
        if missing:
            cache.update(zip(missing, project(list(self._src[which][missing]), self._epsg), strict=True))
        return np.asarray([cache[i] for i in index.tolist()], dtype=object)

    def polygons(self, index: np.ndarray) -> np.ndarray:
        return self._get(0, index)

    def lakes(self, index: np.ndarray) -> np.ndarray:
        return self._get(1, index)


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
