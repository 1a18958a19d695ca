"""Lake history (pure, no I/O): a lake's versions derived from its observations.

:func:`derive_history`: a lake's versions are a deterministic function of its observations
ordered by sensing time and of its lineage events (split, merge); whichever order scenes arrive
in, and however often one is re-run, the result is the same. :func:`extend_histories` applies
the same rules to one observation per lake that is newer than all of the lake's others, from the
end of each history alone (the merge's fast path, vectorised); it declines the cases that need
the whole series, which the merge derives again in full.

HISTORY RULE SYNC CONTRACT. The rules below are written three times and must change together:

1. :func:`derive_history` (the definition: every observation, any order);
2. :func:`extend_histories` (the same rules from a history's tip, numpy, one new observation);
3. the merge's SQL fast path, :mod:`db.merge.fast_path` (closes and opens the versions that
   ``extend_histories`` decided, computes Δarea and rate with :func:`area_change`, moves the lake
   row on).

Enforced by ``tests/db/test_merge_scale.py::test_random_batch_fast_path_equals_the_pure_derivation``
(a random batch merged through the fast path equals, row for row, the same batch with every
history derived again in full, and :func:`db.merge.stale_histories` finds nothing) and
``test_extending_a_tip_gives_the_derived_history`` (hypothesis: ``extend_history`` of a tip equals
``derive_history`` of the whole series); ``tests/db/test_properties.py`` (hypothesis: merging a
generated batch twice or out of order equals merging it once in order, histories not stale).

Rules (tolerances from :class:`db.records.MergeConfig`):

* The first present observation opens a ``new`` version (``split`` for a lake born by a split).
* A later present observation opens a ``grown`` / ``shrunk`` version only when
  ``|Δarea| > area_rel_tol × area`` **and** ``|Δarea| > 2√(π·area) × boundary_tol_m`` (a shift of
  the whole shore of an equal-area disc by the tolerance), where area is the current version's
  (not the previous observation's, so slow drift still adds up to a change). Otherwise the
  current version continues unchanged.
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

import numpy as np

from db.records import MergeConfig

ACTIVE = "active"
DISAPPEARED = "disappeared"

__all__ = [
    "ABSORBED_INTO",
    "ABSORBED_OTHERS",
    "ACTIVE",
    "BORN_BY_SPLIT",
    "CONTINUES",
    "DISAPPEARED",
    "Extension",
    "HistoryTip",
    "HistoryTips",
    "LakeHistory",
    "LakeState",
    "LineageEvent",
    "Observation",
    "Version",
    "area_change",
    "derive_history",
    "extend_histories",
    "extend_history",
    "micros",
]

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
    """The :data:`db.attributes.EXTRA_ATTRIBUTES` values (centroid in degrees EPSG:4326, elevation m,
    probability 0–1), by name."""
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
    """(Δ water area in m², growth rate in m²/year) of a version after the previous one.

    The version starts at ``start``, the previous one at ``prev_from``. Both are None where an
    area is unknown; the rate is None for a zero interval.
    """
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
