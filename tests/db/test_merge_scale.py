"""The merge's set-based fast path: same results as the pure derivation, at a few thousand lakes.

Pure checks first (tip extension vs :func:`derive_history`, identity shortcuts vs
:func:`match_polygons`, bulk outline repair), then merges against a real PostGIS: the three
benchmark merges at 2,000 real ICIMOD outlines, and a random batch of scenes (growth, noise,
drains, clouds, a split, a merge, backfill, one sensing time seen twice) whose stored histories
must equal the derivation from their observations, and equal a run that rebuilds every history.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from shapely import affinity
from shapely.geometry import GeometryCollection, LineString, MultiPolygon, Point, Polygon, box
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Engine, Text, cast, func, select, text

import db.merge.fast_path as fast_path_module
import db.merge.transaction as merge_module
from db.attributes import ATTRIBUTES
from db.engine import make_engine
from db.geometry import as_multipolygon, as_multipolygons, project
from db.history import ACTIVE, HistoryTip, Observation, area_change, derive_history, extend_history
from db.identity import match_outlines, match_polygons
from db.merge import ensure_aoi, merge_scene, stale_histories
from db.records import MergeConfig, ObservedLake, SceneResult
from db.schema import lake, lake_observation, lake_version
from tests import helpers as h

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "tests" / "_reports" / "merge_scale.json"
UTM = 32645
X0, Y0 = 470_000.0, 3_090_000.0
T0 = datetime(2023, 7, 1, 4, 55, tzinfo=UTC)
_to_lonlat = Transformer.from_crs(UTM, 4326, always_xy=True)


def _load_module(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lonlat(geom: BaseGeometry) -> BaseGeometry:
    """UTM 45N metres → EPSG:4326."""
    return shapely.transform(geom, lambda c: np.column_stack(_to_lonlat.transform(c[:, 0], c[:, 1])))


def write_report(figures: dict[str, object]) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    try:
        current = json.loads(REPORT.read_text())
    except (OSError, ValueError):
        current = {}
    current.update(figures)
    REPORT.write_text(json.dumps(current, indent=2, sort_keys=True, default=str) + "\n")


# --- pure: extending a history from its tip ------------------------------------------------------


def _tip(observations: list[Observation], config: MergeConfig) -> HistoryTip | None:
    state = derive_history(observations, (), config).state
    if state is None:
        return None
    return HistoryTip(
        state.status, state.source.area_m2, state.first_seen, state.last_seen, state.last_observed, state.n_observations
    )


_steps = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.1, 1.0, 3.0, 30.0]),  # days after the previous observation (0: same time)
        st.one_of(st.none(), st.floats(min_value=5e4, max_value=5e5)),  # None = seen dry
    ),
    min_size=2,
    max_size=10,
)


@settings(max_examples=300, deadline=None)
@given(steps=_steps, absent_to_disappear=st.sampled_from([1, 2, 3]))
def test_extending_a_tip_gives_the_derived_history(
    steps: list[tuple[float, float | None]], absent_to_disappear: int
) -> None:
    """Wherever extend_history decides, derive_history over all observations gives the same
    versions (the current one closed, one opened with the same Δarea and rate) and the same state.
    """
    config = MergeConfig(absent_to_disappear=absent_to_disappear)
    observations, t = [], T0
    for i, (days, area) in enumerate(steps):
        t += timedelta(days=days)
        perimeter = None if area is None else 2 * math.sqrt(math.pi * area)
        observations.append(Observation(t, area is not None, area, perimeter, scene_id=i, order_key=f"{i:02d}"))
    for k in range(1, len(observations)):
        tip = _tip(observations[:k], config)
        obs = observations[k]
        extension = None if tip is None else extend_history(tip, obs, config)
        if extension is None:
            continue
        before = derive_history(observations[:k], (), config).versions
        after = derive_history(observations[: k + 1], (), config)
        assert after.state is not None and _tip(observations[: k + 1], config) == extension.tip
        if extension.change_kind is None:
            assert after.versions == before
            continue
        *closed, opened = after.versions
        assert tuple(closed) == (*before[:-1], replace(before[-1], valid_to=obs.sensing_time))
        assert (opened.change_kind, opened.status, opened.source, opened.valid_from) == (
            extension.change_kind,
            ACTIVE,
            obs,
            obs.sensing_time,
        )
        assert (opened.area_change_m2, opened.growth_rate_m2_per_year) == area_change(
            tip.area_m2, obs.area_m2, before[-1].valid_from, obs.sensing_time
        )


def test_extension_declines_what_needs_the_whole_series() -> None:
    """Backfill, a repeated sensing time, a return from disappearance and a second dry sighting
    are left to the full derivation; a first dry sighting or a small change are decided.
    """
    tip = HistoryTip(ACTIVE, 1e5, T0, T0 + timedelta(days=10), T0 + timedelta(days=10), 2)
    later = T0 + timedelta(days=20)
    wet = Observation(later, True, 1.02e5, 1_000.0)
    dry = Observation(later, False, None, None)
    assert extend_history(tip, replace(wet, sensing_time=T0 + timedelta(days=5))) is None  # older
    assert extend_history(tip, replace(wet, sensing_time=tip.last_observed)) is None  # same time
    assert extend_history(replace(tip, status="disappeared"), wet) is None  # comes back
    assert extend_history(replace(tip, last_observed=T0 + timedelta(days=15)), dry) is None  # dry again
    first_dry = extend_history(tip, dry)
    assert first_dry is not None and first_dry.change_kind is None and first_dry.tip.last_seen == tip.last_seen
    noise = extend_history(tip, wet)
    assert noise is not None and noise.change_kind is None and noise.tip.area_m2 == 1e5  # version's area kept
    grown = extend_history(tip, replace(wet, area_m2=2e5))
    assert grown is not None and grown.change_kind == "grown" and grown.tip.area_m2 == 2e5


# --- pure: identity shortcuts ----------------------------------------------------------------------


def _random_scene(seed: int) -> tuple[list[BaseGeometry], dict[int, BaseGeometry]]:
    """Existing lakes and a new scene's polygons (EPSG:4326) related in every way identity knows:
    identical, grown, shrunk, shifted, split, merged, touching, new, tiny slivers.
    """
    rng = np.random.default_rng(seed)
    lakes_m: list[BaseGeometry] = []
    for i in range(24):
        x, y = X0 + (i % 6) * 700.0, Y0 + (i // 6) * 700.0
        if rng.random() < 0.5:
            lakes_m.append(Point(x, y).buffer(rng.uniform(40, 250), quad_segs=8))
        else:
            lakes_m.append(box(x, y, x + rng.uniform(80, 400), y + rng.uniform(60, 300)))
    lakes_ll = [lonlat(g) for g in lakes_m]
    polygons: list[BaseGeometry] = []
    for i, (g_m, g_ll) in enumerate(zip(lakes_m, lakes_ll, strict=True)):
        fate = rng.integers(0, 8)
        if fate == 0:
            polygons.append(g_ll)  # identical outline
        elif fate == 1:
            polygons.append(lonlat(g_m.buffer(rng.uniform(5, 60))))  # grown: covers the lake
        elif fate == 2:
            polygons.append(lonlat(g_m.buffer(-rng.uniform(2, 20))))  # shrunk: inside the lake
        elif fate == 3:
            polygons.append(lonlat(affinity.translate(g_m, rng.uniform(-150, 150), rng.uniform(-150, 150))))
        elif fate == 4:  # split in two unequal pieces
            x0, y0, x1, y1 = g_m.bounds
            cut = x0 + (x1 - x0) * rng.uniform(0.3, 0.45)
            pieces = (box(x0, y0, cut - 5, y1), box(cut + 5, y0, x1, y1))
            polygons += [lonlat(g_m.intersection(piece)) for piece in pieces]
        elif fate == 5 and i % 6 < 5:  # merged with the eastern neighbour
            polygons.append(lonlat(shapely.union_all([g_m, lakes_m[i + 1]]).convex_hull))
        elif fate == 6:  # touching only
            x0, y0, x1, y1 = g_m.bounds
            polygons.append(lonlat(box(x1, y0, x1 + 50, y1)))
        # fate 7 (or 5 at the east edge): not seen
    polygons.append(lonlat(Point(X0 - 900, Y0 - 900).buffer(80)))  # a new lake
    polygons.append(lonlat(box(X0, Y0, X0 + 0.5, Y0 + 0.5)))  # sub-metre sliver on a lake corner
    polygons = [g for g in (as_multipolygon(p) for p in polygons) if g is not None]
    order = rng.permutation(len(polygons))
    return [polygons[k] for k in order], {100 + i: g for i, g in enumerate(lakes_ll)}


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("threshold", [0.3, 0.05, 0.9])
def test_identity_shortcuts_give_the_plan_of_measuring_everything(seed: int, threshold: float) -> None:
    """match_outlines (shortcuts in EPSG:4326) == match_polygons on everything projected to UTM."""
    polygons, lakes = _random_scene(seed)
    expected = match_polygons(
        project(polygons, UTM), dict(zip(lakes, project(list(lakes.values()), UTM), strict=True)), threshold
    )
    plan = match_outlines(polygons, lakes, UTM, threshold)
    assert (dict(plan.continues), plan.new, plan.merges, plan.splits) == (
        dict(expected.continues),
        expected.new,
        expected.merges,
        expected.splits,
    )
    assert expected.continues  # the scene does relate to the lakes


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.3, 0.05])
def test_identity_on_the_scenes_own_utm_outlines_gives_the_same_plan(seed: int, threshold: float) -> None:
    """match_outlines handed the polygons' UTM outlines (as the merge hands the scene's own) plans
    as when it projects them from EPSG:4326: outlines travel in UTM down to identity matching.
    """
    polygons, lakes = _random_scene(seed)
    own_utm = project(polygons, UTM)
    handed = match_outlines(polygons, lakes, UTM, threshold, own_utm)
    projected = match_outlines(polygons, lakes, UTM, threshold)
    assert (dict(handed.continues), handed.new, handed.merges, handed.splits) == (
        dict(projected.continues),
        projected.new,
        projected.merges,
        projected.splits,
    )


def test_bulk_repair_equals_one_by_one() -> None:
    """as_multipolygons keeps valid 2-D MultiPolygons as they are and repairs the rest like as_multipolygon."""
    valid = MultiPolygon([box(0, 0, 1, 1), box(2, 0, 3, 1)])
    inputs: list[BaseGeometry | None] = [
        valid,
        None,
        MultiPolygon(),
        box(0, 0, 1, 1),
        Polygon([(0, 0), (1, 1), (1, 0), (0, 1), (0, 0)]),  # bow-tie
        Polygon([(0, 0, 5), (1, 0, 5), (1, 1, 5)]),
        GeometryCollection([LineString([(0, 0), (1, 1)]), box(5, 5, 6, 6)]),
        MultiPolygon([box(0, 0, 2, 2), box(1, 1, 3, 3)]),  # overlapping parts: invalid
        shapely.from_wkt("MULTIPOLYGON (EMPTY, ((0 0, 1 0, 1 1, 0 0)))"),  # valid, with an empty part
    ]
    out = as_multipolygons(inputs)
    assert out[0] is valid
    for got, geometry in zip(out, inputs, strict=True):
        want = as_multipolygon(geometry)
        assert (got is None and want is None) or (got is not None and want is not None and got.wkb == want.wkb)


# --- database: what the staging COPY writes --------------------------------------------------------


def _scene(key: str, days: float, lakes: list[ObservedLake], aoi: str = "exact") -> SceneResult:
    valid = MultiPolygon([box(X0 - 5_000, Y0 - 5_000, X0 + 5_000, Y0 + 5_000)])
    when = T0 + timedelta(days=days)
    return SceneResult(
        key, aoi, when, f"S2B_{key}", None, None, "m1", "p1", valid, 0.0, 1.0, tuple(lakes), utm_epsg=UTM
    )


@pytest.mark.db
def test_attributes_and_outlines_are_stored_exactly(engine: Engine) -> None:
    """Every attribute (NULL where None, extreme floats bit for bit) and every outline (the WKB of the
    UTM outline handed over, projected once to EPSG:4326) reaches the observation, version and lake
    rows unchanged, SRID 4326.
    """
    ensure_aoi(engine, "exact", box(86.5, 27.5, 87.5, 28.5), UTM)
    outlines = [Point(X0, Y0).buffer(120), box(X0 + 1_000, Y0, X0 + 1_300, Y0 + 200), Point(X0 - 1_500, Y0).buffer(60)]
    odd = [(None, 0.5), (1e-300, 1.0), (4_321.123456789012, 0.0)]  # (elevation, probability)
    lakes = [replace(_water(g), elevation_m=e, mean_probability=q) for g, (e, q) in zip(outlines, odd, strict=True)]
    grown = [
        replace(o, geometry=MultiPolygon([g.buffer(40)]), area_m2=g.buffer(40).area)
        for o, g in zip(lakes, outlines, strict=True)
    ]
    for key, days, batch in (("a", 0, lakes), ("b", 10, lakes), ("c", 20, grown)):
        merge_scene(engine, _scene(key, days, batch))
    columns = ATTRIBUTES
    with engine.connect() as conn:
        for key, batch in (("a", lakes), ("b", lakes), ("c", grown)):
            rows = conn.execute(
                text(
                    f"SELECT {', '.join('o.' + c for c in columns)}, ST_AsBinary(o.geom), ST_SRID(o.geom) "
                    "FROM inventory.lake_observation o JOIN inventory.scene s USING (scene_id) "
                    "WHERE s.scene_key = :k ORDER BY o.observation_id"
                ),
                {"k": key},
            ).all()
            expected = [
                (*(getattr(o, c) for c in columns), shapely.to_wkb(lonlat(o.geometry), byte_order=1), 4326)
                for o in batch
            ]
            assert [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows] == expected
        current = conn.execute(
            text(
                f"SELECT {', '.join('l.' + c for c in columns)}, ST_AsBinary(l.geom), "
                f"{', '.join('v.' + c for c in columns)}, ST_AsBinary(v.geom) FROM inventory.lake l "
                "JOIN inventory.lake_version v ON v.lake_id = l.lake_id AND upper_inf(v.valid) ORDER BY l.lake_id"
            )
        ).all()
    for row, o in zip(current, grown, strict=True):
        want = (*(getattr(o, c) for c in columns), shapely.to_wkb(lonlat(o.geometry), byte_order=1))
        assert tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) == want * 2
    assert stale_histories(engine, "exact") == []


# --- database: the benchmark's three merges at 2,000 real outlines --------------------------------

BENCH = ROOT / "benchmarks" / "inventory_merge.py"
_ATTRS = ATTRIBUTES
_TIMES = ("first_seen", "last_seen", "last_observed")


@pytest.mark.db
def test_three_merges_of_2000_real_outlines(engine: Engine, realdata: Path) -> None:
    """First merge: N new lakes; identical re-merge: N observations, no version; all grown: N
    versions. Every history equals the derivation from the observations.
    """
    bench = _load_module("gl_bench_inventory_merge", BENCH)
    n = 2_000
    outlines = bench.load_outlines(n)
    lakes, grown = bench.observed(outlines), bench.observed(bench.grown(outlines))
    footprint = MultiPolygon([box(*shapely.total_bounds(outlines.lonlat)).buffer(0.05, join_style="mitre")])
    ensure_aoi(engine, "hma", footprint, bench.UTM_EPSG)
    seconds = {}
    reports = []
    for key, days, scene_lakes in (("first", 0, lakes), ("noop", 16, lakes), ("changed", 32, grown)):
        started = time.perf_counter()
        reports.append(merge_scene(engine, bench.scene(key, days, scene_lakes, footprint, "hma")))
        seconds[key] = round(time.perf_counter() - started, 3)
    first, noop, changed = reports
    assert (first.new_lakes, first.observations, first.versions_added) == (n, n, n)
    assert (noop.new_lakes, noop.observations, noop.absent, noop.versions_added, noop.changed_lakes) == (0, n, 0, 0, 0)
    assert (changed.new_lakes, changed.observations, changed.versions_added, changed.changed_lakes) == (0, n, n, n)
    with engine.connect() as conn:
        kinds = (
            conn.execute(
                text(
                    "SELECT string_agg(change_kind, ',' ORDER BY lower(valid)) "
                    "FROM inventory.lake_version GROUP BY lake_id"
                )
            )
            .scalars()
            .all()
        )
        rows = conn.execute(
            select(func.count(), func.min(lake.c.n_observations), func.max(lake.c.n_observations))
        ).one()
        observations = conn.execute(select(func.count()).select_from(lake_observation)).scalar_one()
        open_versions = conn.execute(
            select(func.count()).where(func.upper_inf(lake_version.c.valid), lake_version.c.change_kind == "grown")
        ).scalar_one()
        # The content hash, spelled as the merge always has: the same whichever path wrote the row.
        text_of = [func.coalesce(cast(c, Text), "") for c in (*(lake.c[k] for k in _ATTRS), lake.c.n_observations)]
        epochs = [func.coalesce(cast(func.extract("epoch", lake.c[k]), Text), "") for k in _TIMES]
        content = func.encode(func.ST_AsBinary(lake.c.geom), "hex")
        expected_hash = func.md5(func.concat_ws("|", lake.c.status, content, *text_of[:-1], *epochs, text_of[-1]))
        bad_hashes = conn.execute(select(func.count()).where(lake.c.row_hash != expected_hash)).scalar_one()
    assert tuple(rows) == (n, 3, 3) and observations == 3 * n and open_versions == n and bad_hashes == 0
    assert len(kinds) == n and set(kinds) == {"new,grown"}
    assert stale_histories(engine, "hma") == []
    write_report({"lakes": n, "merge_seconds": seconds})


# --- database: a random batch of scenes ----------------------------------------------------------


def _water(outline_m: BaseGeometry) -> ObservedLake:
    c = lonlat(outline_m).centroid
    outline = MultiPolygon([outline_m]) if outline_m.geom_type == "Polygon" else outline_m
    return ObservedLake(outline, outline_m.area, outline_m.length, c.x, c.y, 5_000.0, 0.9, utm_epsg=UTM)


def _random_batch(seed: int, aoi: str) -> list[SceneResult]:
    """Fourteen scenes over 24 sites: trends and noise, drains, clouds, a split, a merge, one
    sensing time seen twice; in sensing order but for three that arrive last (backfills).
    """
    rng = np.random.default_rng(seed)
    sites = [(X0 + (i % 6) * 900.0, Y0 + (i // 6) * 900.0, rng.uniform(70, 220)) for i in range(24)]
    trend = rng.choice([0.0, 0.0, 0.04, -0.03], size=len(sites))  # radius change per scene
    days = np.sort(rng.choice(np.arange(1, 400), size=13, replace=False)).tolist()
    times = [T0 + timedelta(days=d, hours=float(rng.integers(0, 3))) for d in days]
    times.insert(6, times[5])  # one acquisition processed twice (two keys, one sensing time)
    scenes = []
    for s, when in enumerate(times):
        polygons, holes = [], []
        for i, (x, y, r) in enumerate(sites):
            u = rng.random()
            radius = r * (1.0 + trend[i]) ** s * (1.0 + rng.normal(0.0, 0.02))
            if i == 3 and s >= 7:  # split: a large and a small piece
                polygons.append(box(x - radius, y - radius, x + 0.2 * radius, y + radius))
                polygons.append(box(x + 0.4 * radius, y - radius, x + radius, y + radius))
            elif i == 9 and s >= 9:  # merged with its eastern neighbour
                polygons.append(box(x - radius, y - 250, x + 900 + sites[10][2], y + 250))
            elif i == 10 and s >= 9:
                continue
            elif u < 0.12:
                continue  # seen dry
            elif u < 0.22:
                holes.append(box(x - 400, y - 400, x + 400, y + 400))  # hidden by cloud
            else:
                polygons.append(Point(x, y).buffer(radius, quad_segs=8))
        area = box(X0 - 1_000, Y0 - 1_000, X0 + 6_000, Y0 + 4_000)
        valid = as_multipolygon(area.difference(shapely.union_all(holes)) if holes else area)
        scenes.append(
            SceneResult(
                scene_key=f"{aoi}-{s:02d}",
                aoi_name=aoi,
                sensing_time=when,
                s2_product_id=f"S2A_MSIL2A_{s:02d}",
                s1_product_id=None,
                dem_id="COP-DEM",
                model_version="test-model",
                params_hash="p0",
                valid_footprint=valid,
                cloud_fraction=0.1,
                valid_fraction=0.9,
                lakes=tuple(_water(p) for p in polygons),
                utm_epsg=UTM,
            )
        )
    late = set(rng.choice(len(scenes), size=3, replace=False).tolist())  # backfilled after the others
    return [s for k, s in enumerate(scenes) if k not in late] + [scenes[k] for k in sorted(late, reverse=True)]


@pytest.mark.db
@pytest.mark.parametrize("seed", [7, 11])
def test_random_batch_fast_path_equals_the_pure_derivation(
    engine: Engine, seed: int, monkeypatch: pytest.MonkeyPatch, pg_url_base: str, template_db: str
) -> None:
    """Every stored history equals derive_history of the lake's observations, and the inventory
    equals (row for row, by content) the one written when every history is rebuilt in full (in a
    second database: identity is spatial, so the same scenes in one database would meet the same lakes).
    """
    extended, rebuilt = [], []
    steps, rebuild = merge_module.steps, merge_module.rebuild_history

    def spy_steps(*args: Any, **kw: Any) -> dict[int, str]:
        out = steps(*args, **kw)
        extended.append(len(out))
        return out

    def spy_rebuild(conn: Any, ids: Any, *args: Any) -> dict[str, int]:
        rebuilt.append(len(ids))
        return rebuild(conn, ids, *args)

    monkeypatch.setattr(merge_module, "steps", spy_steps)
    monkeypatch.setattr(merge_module, "rebuild_history", spy_rebuild)
    ensure_aoi(engine, "fast", box(86.5, 27.5, 87.5, 28.5), UTM)
    fast = [merge_scene(engine, s) for s in _random_batch(seed, "fast")]
    assert stale_histories(engine, "fast") == []

    # The same scenes with every existing lake's history derived from all its observations.
    monkeypatch.setattr(fast_path_module, "extend_histories", lambda tips, *a, **k: np.full(len(tips.status), None))
    n_extended, n_rebuilt = sum(extended), sum(rebuilt)
    with h.fresh_database(pg_url_base, template_db) as url:
        other = make_engine(url)
        try:
            ensure_aoi(other, "fast", box(86.5, 27.5, 87.5, 28.5), UTM)
            full = [merge_scene(other, s) for s in _random_batch(seed, "fast")]
            assert stale_histories(other, "fast") == []
            assert h.content(engine) == h.content(other)
        finally:
            other.dispose()
    assert [replace(r, scene_key="") for r in fast] == [replace(r, scene_key="") for r in full]

    # The batch did exercise both paths and every kind of change.
    with engine.connect() as conn:
        kinds = set(
            conn.execute(
                text(
                    "SELECT DISTINCT v.change_kind FROM inventory.lake_version v JOIN inventory.lake l USING (lake_id) "
                    "JOIN inventory.aoi a ON ST_Intersects(a.geom, l.geom) WHERE a.name = 'fast'"
                )
            ).scalars()
        )
    assert n_extended > n_rebuilt > 0
    assert {"new", "grown", "disappeared"} <= kinds and kinds & {"split", "merged"}
    write_report({f"random_batch_{seed}": {"extended": n_extended, "rebuilt": n_rebuilt, "kinds": sorted(kinds)}})
