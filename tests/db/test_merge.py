"""Inventory merge against a real migrated PostGIS: identity, observations, derived history."""

from __future__ import annotations

import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import MultiPolygon, Point, box, shape
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.exc import IntegrityError

from db.engine import make_engine
from db.merge import ensure_aoi, merge_scene
from db.records import MergeReport, ObservedLake, SceneResult
from db.schema import WRITER_ROLE, lake, lake_lineage, lake_observation, lake_version, scene

pytestmark = pytest.mark.db

UTM = 32645  # UTM 45N: Khumbu, Nepal
X0, Y0 = 470_000.0, 3_090_000.0
_to_lonlat = Transformer.from_crs(UTM, 4326, always_xy=True)
_to_utm = Transformer.from_crs(4326, UTM, always_xy=True)
T0 = datetime(2023, 7, 1, 4, 55, tzinfo=UTC)
AOI = "khumbu"


def lonlat(geom: BaseGeometry) -> BaseGeometry:
    """UTM 45N metres → EPSG:4326 lon/lat."""
    return shapely.transform(geom, lambda c: np.column_stack(_to_lonlat.transform(c[:, 0], c[:, 1])))


def utm(geom: BaseGeometry) -> BaseGeometry:
    """EPSG:4326 lon/lat → UTM 45N metres."""
    return shapely.transform(geom, lambda c: np.column_stack(_to_utm.transform(c[:, 0], c[:, 1])))


def water(outline_utm: BaseGeometry) -> ObservedLake:
    """An observed lake from an outline in UTM metres (area and perimeter measured there)."""
    c = lonlat(outline_utm).centroid
    outline = MultiPolygon([outline_utm])
    return ObservedLake(outline, outline_utm.area, outline_utm.length, c.x, c.y, 5000.0, 0.9, utm_epsg=UTM)


def disc(dx: float, dy: float, r: float) -> ObservedLake:
    return water(Point(X0 + dx, Y0 + dy).buffer(r, quad_segs=16))


def rect(x0: float, y0: float, x1: float, y1: float) -> ObservedLake:
    return water(box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1))


def footprint(x0: float = -5_000, y0: float = -5_000, x1: float = 5_000, y1: float = 5_000) -> MultiPolygon:
    """A valid footprint (box in metres around the AOI centre), EPSG:4326."""
    return MultiPolygon([lonlat(box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1))])


FULL = footprint()


def result(
    key: str, days: float, lakes: list[ObservedLake], valid: MultiPolygon | None = FULL, aoi: str = AOI
) -> SceneResult:
    """A scene seeing ``valid`` (EPSG:4326; handed over in UTM, as the pipeline does)."""
    return SceneResult(
        scene_key=key,
        aoi_name=aoi,
        sensing_time=T0 + timedelta(days=days),
        s2_product_id=f"S2A_MSIL2A_{key}",
        s1_product_id=None,
        dem_id="COP-DEM",
        model_version="test-model",
        params_hash="p0",
        valid_footprint=None if valid is None else utm(valid),
        cloud_fraction=0.1,
        valid_fraction=0.9 if valid is not None else 0.0,
        lakes=tuple(lakes),
        inputs={"s2": f"local:{key}"},
        utm_epsg=UTM,
    )


@pytest.fixture
def inv(engine: Engine) -> Engine:
    ensure_aoi(engine, AOI, footprint(-6_000, -6_000, 6_000, 6_000), UTM)
    return engine


def versions(engine: Engine, lake_id: int) -> list[tuple]:  # type: ignore[type-arg]
    v = lake_version
    q = select(
        func.lower(v.c.valid), func.upper(v.c.valid), v.c.change_kind, v.c.status, v.c.area_m2, v.c.area_change_m2
    )
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(q.where(v.c.lake_id == lake_id).order_by(func.lower(v.c.valid)))]


def lakes(engine: Engine) -> list:  # type: ignore[type-arg]
    with engine.connect() as c:
        return list(c.execute(select(lake).order_by(lake.c.lake_id)))


def count(engine: Engine, table) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(table)).scalar_one())


def test_ensure_aoi_is_an_idempotent_upsert(engine: Engine) -> None:
    """Same name → same id, one row; the outline and CRS are updated."""
    first = ensure_aoi(engine, AOI, footprint(), UTM)
    assert ensure_aoi(engine, AOI, footprint(-1, -1, 1, 1), UTM) == first
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM inventory.aoi")).scalar_one() == 1
    with pytest.raises(ValueError):
        ensure_aoi(engine, "bad", footprint(), 4326)


def test_new_lakes_get_rows_observations_and_a_new_version(inv: Engine) -> None:
    """First scene: every polygon is a new active lake with one open 'new' version and its area."""
    report = merge_scene(inv, result("a", 0, [disc(0, 0, 200), disc(2_000, 0, 150)]))
    assert (report.noop, report.observations, report.new_lakes, report.absent) == (False, 2, 2, 0)
    assert report.versions_added == 2 and report.changed_lakes == 0
    rows = lakes(inv)
    assert [r.status for r in rows] == ["active", "active"] and all(r.n_observations == 1 for r in rows)
    assert rows[0].area_m2 == pytest.approx(math.pi * 200**2, rel=0.01)
    (v,) = versions(inv, rows[0].lake_id)
    assert v[1] is None and v[2:4] == ("new", "active")
    with inv.connect() as c:
        ok = c.execute(
            text(
                "SELECT bool_and(ST_IsValid(geom) AND ST_SRID(geom) = 4326 AND "
                "GeometryType(geom) = 'MULTIPOLYGON') FROM inventory.lake_version"
            )
        ).scalar_one()
        assert ok is True
        assert c.execute(select(func.count()).where(lake.c.row_hash.is_(None))).scalar_one() == 0


def test_growing_lake_gets_a_grown_version_with_positive_change(inv: Engine) -> None:
    """R 200 m → 260 m → noise: two versions, 'grown' with Δarea > 0; noise adds none."""
    merge_scene(inv, result("a", 0, [disc(0, 0, 200)]))
    report = merge_scene(inv, result("b", 30, [disc(0, 0, 260)]))
    assert (report.changed_lakes, report.versions_added, report.new_lakes) == (1, 1, 0)
    with inv.connect() as c:
        ids_before = c.execute(select(lake_version.c.version_id).order_by(lake_version.c.version_id)).all()
    noise = merge_scene(inv, result("c", 60, [disc(3, -2, 262)]))
    assert (noise.changed_lakes, noise.versions_added, noise.observations) == (0, 0, 1)
    with inv.connect() as c:  # an unchanged history keeps its rows
        assert c.execute(select(lake_version.c.version_id).order_by(lake_version.c.version_id)).all() == ids_before
    (row,) = lakes(inv)
    hist = versions(inv, row.lake_id)
    assert [h[2] for h in hist] == ["new", "grown"]
    assert hist[1][5] > 0 and hist[0][1] == hist[1][0] == T0 + timedelta(days=30)
    assert row.area_m2 == pytest.approx(math.pi * 260**2, rel=0.01) and row.n_observations == 3
    assert row.last_seen == T0 + timedelta(days=60)


def test_cloud_hidden_lake_is_not_observed_and_not_retired(inv: Engine) -> None:
    """Outside or only partly inside the valid footprint, or no footprint: no row, still active."""
    merge_scene(inv, result("a", 0, [disc(0, 0, 200)]))
    elsewhere = footprint(1_000, 1_000, 5_000, 5_000)
    half = footprint(0, -5_000, 5_000, 5_000)  # covers half the lake
    for i, valid in enumerate([elsewhere, half, None, elsewhere]):
        report = merge_scene(inv, result(f"cloud{i}", 10 + 10 * i, [], valid=valid))
        assert (report.absent, report.disappeared) == (0, 0)
    assert count(inv, lake_observation) == 1
    (row,) = lakes(inv)
    assert row.status == "active" and [v[2] for v in versions(inv, row.lake_id)] == ["new"]


def test_drained_lake_disappears_after_two_absent_scenes_and_reappears(inv: Engine) -> None:
    """One dry scene is not enough; the second (another day) retires it from the first dry time."""
    merge_scene(inv, result("a", 0, [disc(0, 0, 200)]))
    first = merge_scene(inv, result("b", 20, []))
    (row,) = lakes(inv)
    assert (first.absent, first.disappeared, row.status) == (1, 0, "active")
    second = merge_scene(inv, result("c", 40, []))
    (row,) = lakes(inv)
    assert (second.absent, second.disappeared, row.status) == (1, 1, "disappeared")
    hist = versions(inv, row.lake_id)
    assert [(h[0], h[2], h[3]) for h in hist] == [
        (T0, "new", "active"),
        (T0 + timedelta(days=20), "disappeared", "disappeared"),
    ]
    assert row.last_seen == T0 and row.last_observed == T0 + timedelta(days=40)
    with inv.connect() as c:
        absent = c.execute(
            select(lake_observation.c.geom, lake_observation.c.area_m2).where(~lake_observation.c.present)
        )
        assert all(g is None and a is None for g, a in absent)
    back = merge_scene(inv, result("d", 60, [disc(0, 0, 190)]))
    assert (back.reappeared, back.new_lakes) == (1, 0)
    assert lakes(inv)[0].status == "active" and versions(inv, row.lake_id)[-1][2] == "reappeared"


def test_rerun_of_a_committed_key_is_a_noop(inv: Engine) -> None:
    """Second merge of one key writes nothing: same counts, same version rows (ids included)."""
    scenes = [result("a", 0, [disc(0, 0, 200)]), result("b", 30, [disc(0, 0, 260)])]
    for s in scenes:
        merge_scene(inv, s)
    tables = (scene, lake, lake_observation, lake_version, lake_lineage)
    before = [count(inv, t) for t in tables]
    with inv.connect() as c:
        ids_before = c.execute(select(lake_version.c.version_id, lake.c.row_hash).join(lake)).all()
    again = merge_scene(inv, scenes[1])
    assert again == MergeReport(scene_key="b", noop=True)
    assert [count(inv, t) for t in tables] == before
    with inv.connect() as c:
        assert c.execute(select(lake_version.c.version_id, lake.c.row_hash).join(lake)).all() == ids_before


def test_split_continues_the_largest_and_links_the_new_lake(inv: Engine) -> None:
    """One lake, then two polygons inside it: the larger continues it, the other is a split child."""
    merge_scene(inv, result("a", 0, [rect(0, 0, 1_000, 300)]))
    (parent,) = lakes(inv)
    report = merge_scene(inv, result("b", 30, [rect(0, 0, 300, 300), rect(400, 0, 1_000, 300)]))
    assert (report.new_lakes, report.observations) == (1, 2)
    rows = lakes(inv)
    child = next(r for r in rows if r.lake_id != parent.lake_id)
    continuing = next(r for r in rows if r.lake_id == parent.lake_id)
    assert continuing.area_m2 == pytest.approx(600 * 300, rel=1e-3)  # the larger piece
    with inv.connect() as c:
        links = c.execute(
            select(lake_lineage.c.parent_lake_id, lake_lineage.c.child_lake_id, lake_lineage.c.kind)
        ).all()
    assert links == [(parent.lake_id, child.lake_id, "split")]
    assert [v[2] for v in versions(inv, child.lake_id)] == ["split"]
    assert [v[2] for v in versions(inv, parent.lake_id)] == ["new", "shrunk"]


def test_merge_retires_the_smaller_lake_into_the_larger(inv: Engine) -> None:
    """Two lakes joined by one polygon: the larger continues ('merged'), the smaller is retired."""
    merge_scene(inv, result("a", 0, [rect(0, 0, 400, 300), rect(500, 0, 700, 300)]))
    big, small = lakes(inv)
    report = merge_scene(inv, result("b", 30, [rect(0, 0, 700, 300)]))
    assert (report.new_lakes, report.observations) == (0, 1)
    with inv.connect() as c:
        links = c.execute(
            select(lake_lineage.c.parent_lake_id, lake_lineage.c.child_lake_id, lake_lineage.c.kind)
        ).all()
    assert links == [(small.lake_id, big.lake_id, "merged")]
    assert [v[2:4] for v in versions(inv, big.lake_id)] == [("new", "active"), ("merged", "active")]
    assert [v[2:4] for v in versions(inv, small.lake_id)] == [("new", "active"), ("merged", "disappeared")]
    big, small = lakes(inv)
    assert small.status == "disappeared" and big.area_m2 == pytest.approx(700 * 300, rel=1e-3)
    # Later scenes match only the continuing lake: no new lineage, the retired one stays untouched.
    later = merge_scene(inv, result("c", 60, [rect(0, 0, 700, 300)]))
    assert (later.observations, later.absent, later.new_lakes) == (1, 0, 0)
    assert count(inv, lake_lineage) == 1 and lakes(inv)[1].n_observations == 1


def _scenario(i: int) -> list[SceneResult]:
    """A: three lakes; B: one grows, one drains; C: grown further, still dry, one noisy; D: refills."""
    a = [disc(0, 0, 200), disc(2_000, 0, 150), disc(-2_000, 1_000, 180)]
    b = [disc(0, 0, 260), disc(-2_000, 1_000, 181)]
    c = [disc(0, 0, 320), disc(-2_000, 1_000, 179)]
    d = [disc(0, 0, 321), disc(2_000, 0, 140), disc(-2_000, 1_000, 180)]
    return [
        result(f"{i}{k}", days, ls, aoi=f"aoi{i}")
        for k, days, ls in (("A", 0, a), ("B", 20, b), ("C", 45, c), ("D", 80, d))
    ]


def _history_by_place(engine: Engine, aoi_name: str) -> dict[tuple[int, int], list[tuple]]:  # type: ignore[type-arg]
    """Versions keyed by the lake's position (rounded centroid), since lake ids depend on order."""
    v = lake_version
    q = text(
        "SELECT l.lake_id, round(l.centroid_lon::numeric, 4), round(l.centroid_lat::numeric, 4) FROM inventory.lake l "
        "JOIN inventory.aoi a ON ST_Intersects(a.geom, l.geom) WHERE a.name = :n"
    )
    with engine.connect() as c:
        places = c.execute(q, {"n": aoi_name}).all()
        out = {}
        for lake_id, lon, lat in places:
            rows = c.execute(
                select(
                    func.lower(v.c.valid),
                    func.upper(v.c.valid),
                    v.c.change_kind,
                    v.c.status,
                    v.c.area_m2,
                    v.c.area_change_m2,
                    v.c.growth_rate_m2_per_year,
                )
                .where(v.c.lake_id == lake_id)
                .order_by(func.lower(v.c.valid))
            ).all()
            out[(lon, lat)] = [tuple(r) for r in rows]
    return out


def test_out_of_order_arrival_gives_the_same_versions(inv: Engine) -> None:
    """Scenes A,B,C,D in order vs C,A,D,B (backfill): equal versions per lake, incl. a disappearance."""
    for i in (1, 2):
        ensure_aoi(inv, f"aoi{i}", footprint(-6_000, -6_000, 6_000, 6_000), UTM)
    in_order = _scenario(1)
    for s in in_order:
        merge_scene(inv, s)
    a, b, c, d = _scenario(2)
    for s in (c, a, d, b):
        merge_scene(inv, s)
    expected = _history_by_place(inv, "aoi1")
    assert len(expected) == 3
    assert {tuple(v[2] for v in vs) for vs in expected.values()} == {
        ("new", "grown", "grown"),
        ("new", "disappeared", "reappeared"),
        ("new",),
    }
    assert _history_by_place(inv, "aoi2") == expected


def test_exclusion_constraint_holds_and_is_enforced(inv: Engine) -> None:
    """After many merges no two versions of a lake overlap; a hand-made overlap is rejected."""
    for k, days, r in (("a", 0, 200), ("b", 10, 260), ("c", 20, 330), ("d", 30, 400)):
        merge_scene(inv, result(k, days, [disc(0, 0, r)]))
    merge_scene(inv, result("e", 5, [disc(0, 0, 230)]))  # backfill between versions
    with inv.connect() as c:
        overlaps = c.execute(
            text(
                "SELECT count(*) FROM inventory.lake_version a JOIN inventory.lake_version b "
                "ON a.lake_id = b.lake_id AND a.version_id < b.version_id AND a.valid && b.valid"
            )
        ).scalar_one()
        gaps = c.execute(
            text(
                "SELECT count(*) FROM (SELECT upper(valid) AS u, lead(lower(valid)) OVER w AS nxt FROM "
                "inventory.lake_version WINDOW w AS (PARTITION BY lake_id ORDER BY lower(valid))) s "
                "WHERE nxt IS NOT NULL AND u IS DISTINCT FROM nxt"
            )
        ).scalar_one()
    assert (overlaps, gaps) == (0, 0)
    hist = versions(inv, lakes(inv)[0].lake_id)
    assert [h[0] for h in hist] == [T0 + timedelta(days=d) for d in (0, 5, 10, 20, 30)]  # backfill slotted in
    with pytest.raises(IntegrityError), inv.begin() as c:
        c.execute(
            text(
                "INSERT INTO inventory.lake_version (lake_id, valid, change_kind, status) "
                "SELECT lake_id, tstzrange(lower(valid), NULL), 'grown', 'active' FROM inventory.lake_version LIMIT 1"
            )
        )


def test_unknown_aoi_and_naive_time_are_rejected(inv: Engine) -> None:
    """Bad inputs raise before anything is written."""
    with pytest.raises(LookupError):
        merge_scene(inv, result("x", 0, [disc(0, 0, 200)], aoi="nowhere"))
    with pytest.raises(ValueError):
        merge_scene(inv, SceneResult(**{**result("y", 0, []).__dict__, "sensing_time": datetime(2023, 1, 1)}))
    assert count(inv, scene) == 0


def test_concurrent_merges_of_one_aoi_serialise(inv: Engine) -> None:
    """Two merges at once: the same key commits once (the other is a no-op); two scenes seeing
    the same water make one lake, not two (the second waits for the first's lake).
    """
    same = result("k", 0, [disc(0, 0, 200)])
    other = result("k2", 1, [disc(0, 0, 201)])
    barrier = threading.Barrier(3)

    def run(s: SceneResult) -> MergeReport:
        barrier.wait()
        return merge_scene(inv, s)

    with ThreadPoolExecutor(3) as pool:
        reports = list(pool.map(run, [same, same, other]))
    assert sorted(r.noop for r in reports) == [False, False, True]
    assert count(inv, scene) == 2 and count(inv, lake) == 1 and count(inv, lake_observation) == 2


def test_merge_runs_as_the_writer_role(db_url: str) -> None:
    """The flows' role (no DDL, DELETE only where history is rebuilt) can do a whole merge."""
    writer = make_engine(db_url)

    @event.listens_for(writer, "connect")
    def _as_writer(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET ROLE {WRITER_ROLE}")
        dbapi_conn.commit()

    try:
        ensure_aoi(writer, AOI, footprint(), UTM)
        merge_scene(writer, result("a", 0, [disc(0, 0, 200)]))
        report = merge_scene(writer, result("b", 30, [disc(0, 0, 300)]))
        with writer.connect() as c:
            assert c.execute(text("SELECT current_user")).scalar_one() == WRITER_ROLE
    finally:
        writer.dispose()
    assert (report.noop, report.changed_lakes, report.versions_added) == (False, 1, 1)


EVEREST = ("icimod_glacial_lakes_2015", "GL_3basins_2015_everest_subset.geojson")
"""The real ICIMOD 2015 Khumbu subset (42 lakes), under the ``realdata`` fixture's folder."""


def test_real_icimod_outlines_round_trip_and_stay_stable(inv: Engine, realdata: Path) -> None:
    """42 ICIMOD 2015 Khumbu lakes: stored areas match the outlines in UTM; a re-observation with
    half a pixel of boundary noise adds no version; one lake seen dry gets one absent row.
    """
    features = json.loads(realdata.joinpath(*EVEREST).read_text())["features"]
    to_utm = Transformer.from_crs(4326, UTM, always_xy=True)
    outlines = [shape(f["geometry"]) for f in features]
    in_utm = [shapely.transform(g, lambda c: np.column_stack(to_utm.transform(c[:, 0], c[:, 1]))) for g in outlines]
    ensure_aoi(inv, "everest", shapely.union_all(outlines).envelope.buffer(0.01), UTM)
    valid = MultiPolygon([shapely.union_all(outlines).envelope.buffer(0.005)])
    first = merge_scene(inv, result("e1", 0, [water(g) for g in in_utm], valid=valid, aoi="everest"))
    assert (first.new_lakes, first.observations) == (42, 42)
    with inv.connect() as c:
        drift = c.execute(
            text("SELECT max(abs(ST_Area(ST_Transform(geom, 32645)) - area_m2) / area_m2) FROM inventory.lake")
        ).scalar_one()
    assert drift < 1e-6
    noisy = [water(g.buffer(5.0 if i % 2 else -5.0)) for i, g in enumerate(in_utm)]
    second = merge_scene(inv, result("e2", 16, noisy, valid=valid, aoi="everest"))
    assert (second.new_lakes, second.versions_added, second.changed_lakes, second.observations) == (0, 0, 0, 42)
    third = merge_scene(inv, result("e3", 32, [water(g) for g in in_utm[1:]], valid=valid, aoi="everest"))
    assert (third.absent, third.new_lakes, third.observations) == (1, 0, 41)
