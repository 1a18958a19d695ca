"""Pure parts of the merge: versions derived from observations, and identity by overlap."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import GeometryCollection, LineString, Polygon, box

from db.geometry import as_multipolygon, project
from db.history import (
    ABSORBED_INTO,
    ABSORBED_OTHERS,
    ACTIVE,
    BORN_BY_SPLIT,
    DISAPPEARED,
    LineageEvent,
    Observation,
    derive_history,
)
from db.identity import absent_lakes, match_polygons
from db.records import MergeConfig

T0 = datetime(2024, 6, 1, 5, 0, tzinfo=UTC)
CONFIG = MergeConfig()


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def disc(area: float) -> float:
    """Perimeter (m) of a disc of this area (m²): the boundary tolerance scales with it."""
    return 2.0 * math.sqrt(math.pi * area)


def present(t: datetime, area: float, key: str = "") -> Observation:
    return Observation(t, True, area, disc(area), {"mean_probability": 0.9}, scene_id=None, order_key=key)


def absent(t: datetime, key: str = "") -> Observation:
    return Observation(t, False, None, None, order_key=key)


def kinds(observations: list[Observation], events: tuple[LineageEvent, ...] = ()) -> list[str]:
    return [v.change_kind for v in derive_history(observations, events, CONFIG).versions]


def test_first_present_observation_opens_an_open_ended_new_version() -> None:
    """One sighting gives one current 'new' version with no change figures."""
    history = derive_history([present(day(0), 100_000.0)])
    (version,) = history.versions
    assert (version.change_kind, version.status, version.valid_from, version.valid_to) == ("new", ACTIVE, day(0), None)
    assert version.area_change_m2 is None and version.growth_rate_m2_per_year is None
    assert history.state is not None and history.state.n_observations == 1


def test_growth_beyond_both_tolerances_opens_a_grown_version_with_rate() -> None:
    """Doubling in one year: 'grown', Δarea = +100 000 m², rate = Δarea per 365.25 days."""
    history = derive_history([present(day(0), 100_000.0), present(day(365.25), 200_000.0)])
    first, second = history.versions
    assert second.change_kind == "grown" and first.valid_to == second.valid_from == day(365.25)
    assert second.area_change_m2 == pytest.approx(100_000.0)
    assert second.growth_rate_m2_per_year == pytest.approx(100_000.0)
    assert kinds([present(day(0), 200_000.0), present(day(30), 100_000.0)]) == ["new", "shrunk"]


def test_boundary_noise_never_opens_a_version() -> None:
    """±4 % noise swings 8 %, beyond the relative tolerance but within one pixel of boundary."""
    area = 100_000.0  # disc perimeter ~1 100 m → ~11 000 m² boundary tolerance (11 %)
    noisy = [present(day(i), area * (1.0 + (0.04 if i % 2 else -0.04))) for i in range(10)]
    history = derive_history(noisy)
    assert [v.change_kind for v in history.versions] == ["new"]
    # The current outline stays the one that opened the version, not the latest noisy one.
    assert history.state is not None and history.state.source is noisy[0]


def test_slow_drift_adds_up_against_the_current_version() -> None:
    """Steps below tolerance accumulate: the change is measured from the version's own area."""
    steps = [present(day(i), 100_000.0 + 5_000.0 * i) for i in range(4)]  # +5 000 m² per step
    history = derive_history(steps)
    assert [v.change_kind for v in history.versions] == ["new", "grown"]
    assert history.versions[1].valid_from == day(3)  # 115 000 − 100 000 > 11 210 first here


def test_two_absent_observations_on_different_days_make_a_disappearance() -> None:
    """Drained lake: 'disappeared' from the first dry sighting, last outline kept, water lost."""
    obs = [present(day(0), 100_000.0), absent(day(10)), absent(day(20))]
    history = derive_history(obs)
    assert [v.change_kind for v in history.versions] == ["new", "disappeared"]
    gone = history.versions[1]
    assert (gone.status, gone.valid_from, gone.valid_to) == (DISAPPEARED, day(10), None)
    assert gone.source is obs[0] and gone.area_change_m2 == pytest.approx(-100_000.0)
    assert history.state is not None and history.state.status == DISAPPEARED
    assert history.state.last_seen == day(0) and history.state.last_observed == day(20)


def test_one_absent_observation_or_two_on_one_day_is_not_enough() -> None:
    """A single dry sighting, or two on the same calendar day, do not retire a lake."""
    assert kinds([present(day(0), 100_000.0), absent(day(10))]) == ["new"]
    assert kinds([present(day(0), 100_000.0), absent(day(10)), present(day(20), 100_000.0)]) == ["new"]
    same_day = [present(day(0), 100_000.0), absent(day(10)), absent(day(10) + timedelta(hours=3))]
    assert kinds(same_day) == ["new"]
    interrupted = [present(day(0), 1e5), absent(day(1)), present(day(2), 1e5), absent(day(3))]
    assert kinds(interrupted) == ["new"]


def test_present_after_disappearance_reappears_with_water_gained() -> None:
    """Refilled lake: 'reappeared', active again, Δarea counts the water regained."""
    obs = [present(day(0), 100_000.0), absent(day(5)), absent(day(6)), present(day(40), 80_000.0)]
    history = derive_history(obs)
    assert [(v.change_kind, v.status) for v in history.versions] == [
        ("new", ACTIVE),
        ("disappeared", DISAPPEARED),
        ("reappeared", ACTIVE),
    ]
    assert history.versions[2].area_change_m2 == pytest.approx(80_000.0)
    assert history.state is not None and history.state.status == ACTIVE


def test_absent_before_first_sighting_and_duplicate_times() -> None:
    """Backfilled dry scenes before a lake existed make no version; at one time, present wins."""
    obs = [absent(day(0), "a"), absent(day(1), "b"), present(day(2), 100_000.0, "c")]
    history = derive_history(obs)
    assert [(v.change_kind, v.valid_from) for v in history.versions] == [("new", day(2))]
    assert history.state is not None and history.state.first_seen == day(2) and history.state.n_observations == 3
    dup = [present(day(0), 1e5), absent(day(3), "x"), present(day(3), 1e5, "a"), absent(day(4))]
    assert kinds(dup) == ["new"]


def test_lineage_events_set_split_and_merge_kinds() -> None:
    """Split child starts 'split'; merge continuation gets 'merged' even without area change;
    an absorbed lake ends 'merged' + disappeared and ignores later observations.
    """
    assert kinds([present(day(0), 1e5)], (LineageEvent(day(0), BORN_BY_SPLIT),)) == ["split"]

    same = [present(day(0), 1e5), present(day(9), 1e5)]
    assert kinds(same, (LineageEvent(day(9), ABSORBED_OTHERS),)) == ["new", "merged"]

    history = derive_history([*same, present(day(20), 1e5)], (LineageEvent(day(9), ABSORBED_INTO),))
    assert [(v.change_kind, v.status, v.valid_from) for v in history.versions] == [
        ("new", ACTIVE, day(0)),
        ("merged", DISAPPEARED, day(9)),
    ]
    assert history.state is not None and history.state.status == DISAPPEARED


_series = st.lists(
    st.one_of(st.none(), st.floats(min_value=5e4, max_value=5e5)),  # None = absent
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(series=_series, perm=st.randoms(use_true_random=False))
def test_versions_do_not_depend_on_arrival_order(series: list[float | None], perm) -> None:  # type: ignore[no-untyped-def]
    """Any permutation of the observations derives identical, contiguous versions."""
    obs = [present(day(i), a, str(i)) if a is not None else absent(day(i), str(i)) for i, a in enumerate(series)]
    shuffled = list(obs)
    perm.shuffle(shuffled)
    reference = derive_history(obs, (), CONFIG)
    assert derive_history(shuffled, (), CONFIG) == reference
    versions = reference.versions
    for earlier, later in itertools.pairwise(versions):
        assert earlier.valid_to == later.valid_from and earlier.valid_from < later.valid_from
    if versions:
        assert versions[-1].valid_to is None and versions[0].change_kind == "new"


# --- identity (pure, metric CRS) ---


def sq(x: float, y: float, w: float, h: float | None = None) -> Polygon:
    return box(x, y, x + w, y + (w if h is None else h))


def test_polygons_matching_nothing_are_new_and_weak_overlap_does_not_match() -> None:
    """Overlap below the threshold (of the smaller area) is not identity."""
    plan = match_polygons([sq(0, 0, 100), sq(1_000, 0, 100)], {7: sq(80, 0, 100)}, 0.3)  # 20 % overlap
    assert plan.new == (0, 1) and dict(plan.continues) == {} and plan.splits == () and plan.merges == ()
    plan = match_polygons([sq(0, 0, 100)], {7: sq(60, 0, 100)}, 0.3)  # 40 % overlap
    assert dict(plan.continues) == {0: 7} and plan.new == ()


def test_overlap_is_relative_to_the_smaller_shape() -> None:
    """A small lake inside a much larger new polygon still matches it (grown lake)."""
    plan = match_polygons([sq(0, 0, 1_000)], {3: sq(10, 10, 50)}, 0.3)
    assert dict(plan.continues) == {0: 3}


def test_one_polygon_over_two_lakes_merges_into_the_larger() -> None:
    """Many → one: continues the larger lake, the smaller is absorbed."""
    plan = match_polygons([sq(0, 0, 700, 300)], {1: sq(500, 0, 200, 300), 2: sq(0, 0, 400, 300)}, 0.3)
    assert dict(plan.continues) == {0: 2} and plan.merges == ((1, 2),) and plan.new == ()
    assert plan.matched_lakes == {1, 2}


def test_two_polygons_over_one_lake_split_off_the_smaller() -> None:
    """One → many: the larger polygon continues the lake, the other is a new split child."""
    plan = match_polygons([sq(0, 0, 300, 300), sq(400, 0, 600, 300)], {5: sq(0, 0, 1_000, 300)}, 0.3)
    assert dict(plan.continues) == {1: 5} and plan.new == (0,) and plan.splits == ((5, 0),)


def test_absent_needs_the_lake_inside_the_valid_footprint() -> None:
    """Covered ≥ min share → absent candidate; half covered or outside → not observed."""
    footprint = sq(0, 0, 1_000)
    lakes = {1: sq(100, 100, 50), 2: sq(975, 100, 50), 3: sq(2_000, 0, 50), 4: sq(955, 100, 50)}  # 100/50/0/90 %
    assert absent_lakes(lakes, footprint, 0.95) == [1]
    assert absent_lakes(lakes, footprint, 0.5) == [1, 2, 4]
    assert absent_lakes({}, footprint, 0.95) == []


def test_as_multipolygon_repairs_and_keeps_polygonal_parts() -> None:
    """Bow-ties become valid MultiPolygons, Z is dropped, lines vanish, empties give None."""
    bowtie = Polygon([(0, 0), (1, 1), (1, 0), (0, 1), (0, 0)])
    fixed = as_multipolygon(bowtie)
    assert fixed is not None and fixed.is_valid and fixed.geom_type == "MultiPolygon"
    assert fixed.area == pytest.approx(0.5)
    mixed = GeometryCollection([LineString([(0, 0), (5, 5)]), Polygon([(0, 0, 9), (1, 0, 9), (1, 1, 9)])])
    out = as_multipolygon(mixed)
    assert out is not None and not out.has_z and out.area == pytest.approx(0.5)
    assert as_multipolygon(LineString([(0, 0), (1, 1)])) is None and as_multipolygon(None) is None


def test_project_gives_metres() -> None:
    """A 0.01° square near 28° N in UTM 45N has about 1 113 m × 983 m."""
    (m,) = project([sq(86.8, 27.9, 0.01)], 32645)
    assert m.area == pytest.approx(1_113.2 * 983.4, rel=0.01)
    with pytest.raises(ValueError):
        project([sq(0, 0, 1)], 4326)
