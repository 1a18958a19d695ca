"""R5: eight processes merging scenes of one AOI at once (started on a barrier); fourteen on two
overlapping AOIs.

Each worker is a forked process with its own engine. Figures: ``pg_stat_database.deadlocks``
delta, runs no-op'd, lock-wait p95 (time spent in ``pg_advisory_xact_lock``, measured by an
event listener in the worker), and whether the result equals merging the same scenes serially,
in sensing order, in a fresh database.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import uuid
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from db.engine import make_engine
from db.merge import ensure_aoi, merge_scene
from db.records import SceneResult
from tests import helpers as h

pytestmark = [pytest.mark.db, pytest.mark.slow]

AOI = "khumbu"
EAST = "khumbu-east"  # overlaps AOI (tests.helpers.overlapping)
N = 8
_DEADLOCKS = sa.text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")


def _worker(url: str, app: str, s: SceneResult, barrier: Any, out: Any) -> None:
    """Merge ``s`` once the barrier opens; send (key, noop, lock wait s, error) back."""
    engine = make_engine(url, poolclass=sa.pool.NullPool, connect_args={"application_name": app})
    waits: list[float] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "pg_advisory_xact_lock" in statement:
            conn.info["lock_t0"] = time.monotonic()

    @sa.event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "pg_advisory_xact_lock" in statement:
            waits.append(time.monotonic() - conn.info.pop("lock_t0"))

    try:
        with engine.connect() as conn:  # connect before the barrier: the race is on the lock
            conn.execute(sa.text("SELECT 1"))
        barrier.wait(timeout=60)
        report = merge_scene(engine, s)
        out.put((s.scene_key, report.noop, waits[0] if waits else None, None))
    except Exception as exc:  # reported to the parent, which fails the test
        out.put((s.scene_key, None, None, f"{type(exc).__name__}: {exc}"))
    finally:
        engine.dispose()


def _deadlocks(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
        return int(conn.execute(_DEADLOCKS).scalar_one())


def _race(url: str, app: str, scenes: list[SceneResult]) -> list[tuple[str, bool | None, float | None, str | None]]:
    """Run one forked worker per scene, all released at once; their results."""
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(len(scenes)), ctx.SimpleQueue()
    workers = [ctx.Process(target=_worker, args=(url, app, s, barrier, out)) for s in scenes]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert all(w.exitcode == 0 for w in workers), [w.exitcode for w in workers]
    return [out.get() for _ in workers]


def _serial(pg_url_base: str, template_db: str, scenes: list[SceneResult]) -> dict[str, tuple[int, str]]:
    with h.fresh_database(pg_url_base, template_db) as url:
        engine = make_engine(url)
        try:
            ensure_aoi(engine, AOI, h.footprint(), h.UTM)
            for s in sorted(scenes, key=lambda s: s.sensing_time):
                merge_scene(engine, s)
            return h.content(engine)
        finally:
            engine.dispose()


def _settle(engine: sa.Engine, app: str, before: int) -> int:
    """Deadlocks since ``before``, read once the workers' backends are gone (exit flushes their stats)."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            left = conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :app"), {"app": app}
            ).scalar_one()
        if left == 0:
            break
        time.sleep(0.05)
    return _deadlocks(engine) - before


def test_eight_processes_on_one_aoi_equal_a_serial_run(
    engine: sa.Engine, db_url: str, pg_url_base: str, template_db: str
) -> None:
    scenes = h.scenario(AOI)  # 7 scenes on distinct dates
    racers = [*scenes, scenes[3]]  # plus one duplicated key
    assert len(racers) == N
    ensure_aoi(engine, AOI, h.footprint(), h.UTM)
    deadlocks_before = _deadlocks(engine)
    app = f"gl-race-{uuid.uuid4().hex[:8]}"
    results = _race(db_url, app, racers)
    deadlocks = _settle(engine, app, deadlocks_before)

    errors = [e for *_, e in results if e]
    noops = [key for key, noop, _, _ in results if noop]
    waits_ms = [1000 * w for _, _, w, _ in results if w is not None]
    raced = h.content(engine)
    serial = _serial(pg_url_base, template_db, scenes)
    figures = {
        "processes": N,
        "deadlocks_delta": deadlocks,
        "errors": errors,
        "runs_noop": len(noops),
        "lock_wait_p95_ms": round(float(np.percentile(waits_ms, 95)), 1) if waits_ms else None,
        "lock_wait_max_ms": round(max(waits_ms), 1) if waits_ms else None,
        "tables_differing_from_serial_run": sorted(t for t in serial if serial[t] != raced[t]),
    }
    h.write_report("concurrent_merges", {"distinct_keys": figures})

    assert errors == [] and deadlocks == 0
    assert noops == [scenes[3].scene_key]  # the duplicate, and only it, was a no-op
    assert raced["scene"][0] == len(scenes)
    assert raced == serial


def test_two_overlapping_aois_racing_equal_a_serial_run(
    engine: sa.Engine, db_url: str, pg_url_base: str, template_db: str
) -> None:
    """Fourteen processes, the scenes of two AOIs over one ground: one lake a site, as serially."""
    scenes = [*h.scenario(AOI), *h.overlapping(EAST)]
    ensure_aoi(engine, AOI, h.footprint(), h.UTM)
    ensure_aoi(engine, EAST, h.east_footprint(), h.UTM)
    deadlocks_before = _deadlocks(engine)
    app = f"gl-race-{uuid.uuid4().hex[:8]}"
    results = _race(db_url, app, scenes)
    deadlocks = _settle(engine, app, deadlocks_before)
    raced = h.content(engine)
    with h.fresh_database(pg_url_base, template_db) as url:
        serial_engine = make_engine(url)
        try:
            ensure_aoi(serial_engine, AOI, h.footprint(), h.UTM)
            ensure_aoi(serial_engine, EAST, h.east_footprint(), h.UTM)
            for s in sorted(scenes, key=lambda s: (s.sensing_time, s.scene_key)):
                merge_scene(serial_engine, s)
            serial = h.content(serial_engine)
        finally:
            serial_engine.dispose()
    figures = {
        "processes": len(scenes),
        "aois": 2,
        "deadlocks_delta": deadlocks,
        "errors": [e for *_, e in results if e],
        "lakes": raced["lake"][0],
        "tables_differing_from_serial_run": sorted(t for t in serial if serial[t] != raced[t]),
    }
    h.write_report("concurrent_merges", {"overlapping_aois": figures})
    assert figures["errors"] == [] and deadlocks == 0
    assert raced["lake"][0] == 5 and raced == serial


def test_eight_identical_keys_commit_exactly_once(engine: sa.Engine, db_url: str) -> None:
    s = h.scenario(AOI)[0]
    ensure_aoi(engine, AOI, h.footprint(), h.UTM)
    deadlocks_before = _deadlocks(engine)
    app = f"gl-race-{uuid.uuid4().hex[:8]}"
    results = _race(db_url, app, [s] * N)
    deadlocks = _settle(engine, app, deadlocks_before)
    commits = sum(1 for _, noop, _, _ in results if noop is False)
    counts = h.row_counts(engine)
    figures = {
        "processes": N,
        "deadlocks_delta": deadlocks,
        "errors": [e for *_, e in results if e],
        "commits": commits,
        "runs_noop": sum(1 for _, noop, _, _ in results if noop),
        "scene_rows": counts["scene"],
        "lake_rows": counts["lake"],
    }
    h.write_report("concurrent_merges", {"identical_keys": figures})

    assert figures["errors"] == [] and deadlocks == 0
    assert (commits, figures["runs_noop"]) == (1, N - 1)
    assert counts["scene"] == 1 and counts["lake"] == len(s.lakes) and counts["lake_observation"] == len(s.lakes)


def test_the_deadlock_counter_sees_a_provoked_deadlock(engine: sa.Engine) -> None:
    """Control: two sessions taking two advisory locks in opposite order make one deadlock,
    and ``pg_stat_database.deadlocks`` counts it (so the zero figures above mean something).
    """
    before = _deadlocks(engine)
    app = f"gl-deadlock-{uuid.uuid4().hex[:8]}"
    other = make_engine(engine.url, poolclass=sa.pool.NullPool, connect_args={"application_name": app})
    mine = make_engine(engine.url, poolclass=sa.pool.NullPool, connect_args={"application_name": app})
    lock = sa.text("SELECT pg_advisory_xact_lock(:k)")
    failures: list[str] = []
    barrier = threading.Barrier(2)

    def take(eng: sa.Engine, first: int, second: int) -> None:
        try:
            with eng.begin() as conn:
                conn.execute(lock, {"k": first})
                barrier.wait(timeout=10)
                conn.execute(lock, {"k": second})
        except sa.exc.DBAPIError as exc:
            failures.append(type(exc.orig).__name__)

    threads = [threading.Thread(target=take, args=args) for args in ((other, 1, 2), (mine, 2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    other.dispose()
    mine.dispose()
    delta = _settle(engine, app, before)
    assert failures == ["DeadlockDetected"] and delta == 1
