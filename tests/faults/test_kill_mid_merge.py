"""R2: a merge SIGKILLed inside its transaction leaves nothing; the rerun equals a clean run.

A child process (``tests.faults.merge_child``) merges one scene and pauses (``pg_sleep`` injected by an
event listener in the child only) inside its transaction: right after its first write (the
scene row, the ledger entry), or when every write is staged and COMMIT is next. The test finds
it in ``pg_stat_activity`` holding a transaction id, kills it, and checks that no row of it is
visible, that the AOI lock is free, and that merging the scene again gives exactly the content
of a clean run in a fresh database.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from db.engine import make_engine
from db.merge import ensure_aoi, merge_scene
from tests import helpers as h

pytestmark = [pytest.mark.db, pytest.mark.slow]

AOI = "khumbu"
EAST = "khumbu-east"  # overlaps AOI (tests.helpers.overlapping)
CHILD = "tests.faults.merge_child"  # run as a module from the checkout, so it imports tests.helpers
ROOT = Path(__file__).resolve().parents[2]
VICTIM = 2  # scene index: a lake grows, one is seen dry, one is born

_PAUSED = sa.text(
    "SELECT pid FROM pg_stat_activity WHERE application_name = :app AND state = 'active' "
    "AND backend_xid IS NOT NULL AND query LIKE 'SELECT pg_sleep%'"
)
_ALIVE = sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
_ADVISORY = sa.text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def _scalar(engine: sa.Engine, sql: sa.TextClause, **params: object) -> object:
    with engine.connect() as conn:
        return conn.execute(sql, params).scalar()


def _wait_paused(engine: sa.Engine, child: subprocess.Popen[str], app: str, timeout_s: float = 90.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = _scalar(engine, _PAUSED, app=app)
        if pid is not None:
            return int(pid)  # type: ignore[call-overload]
        if child.poll() is not None:
            detail = child.stderr.read() if child.stderr else ""
            pytest.fail(f"child exited ({child.returncode}) before pausing: {detail}")
        time.sleep(0.05)
    pytest.fail("child never paused inside its transaction")


@pytest.mark.parametrize(
    ("pause_at", "overlap"), [("scene", False), ("commit", False), ("commit", True)], ids=["scene", "commit", "overlap"]
)
def test_sigkill_inside_the_merge_transaction_leaves_nothing(
    engine: sa.Engine, db_url: str, pg_url_base: str, template_db: str, pause_at: str, overlap: bool
) -> None:
    """With ``overlap``, a second AOI over the east part (tests.helpers.overlapping) has merged its
    scenes up to the victim's date, and the victim is its scene of that date: killed while it holds
    lakes the first AOI found.
    """
    first = h.scenario(AOI)
    ensure_aoi(engine, AOI, h.footprint(), h.UTM)
    scenes, victim_aoi, earlier = first, AOI, []
    if overlap:
        scenes, victim_aoi = h.overlapping(EAST), EAST
        ensure_aoi(engine, EAST, h.east_footprint(), h.UTM)
        earlier = first  # every scene of the first AOI, before and after the victim's date
    for s in (*earlier, *scenes[:VICTIM]):
        merge_scene(engine, s)
    counts_before, content_before = h.row_counts(engine), h.content(engine)

    app = f"gl-fault-{uuid.uuid4().hex[:12]}"
    argv = [sys.executable, "-m", CHILD, db_url, app, victim_aoi, scenes[VICTIM].scene_key, "--pause-at", pause_at]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    terminated_by_hand = False
    try:
        pid = _wait_paused(engine, child, app)
        counts_while_paused = h.row_counts(engine)  # another session: staged rows are invisible
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        killed_at = time.monotonic()
        while _scalar(engine, _ALIVE, pid=pid) and time.monotonic() < killed_at + 30:
            time.sleep(0.02)
        seconds_to_recover = time.monotonic() - killed_at
        if _scalar(engine, _ALIVE, pid=pid):  # the server did not notice the dead client
            terminated_by_hand = True
            _scalar(engine, sa.text("SELECT pg_terminate_backend(:pid, 10000)"), pid=pid)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    counts_after = h.row_counts(engine)
    partial_rows = sum(abs(counts_after[t] - counts_before[t]) for t in counts_before)
    committed = _scalar(
        engine, sa.text("SELECT count(*) FROM inventory.scene WHERE scene_key = :k"), k=scenes[VICTIM].scene_key
    )
    locks_left = _scalar(engine, _ADVISORY)
    content_after_kill = h.content(engine)

    started = time.monotonic()
    rerun = merge_scene(engine, scenes[VICTIM])
    rerun_s = time.monotonic() - started
    for s in scenes[VICTIM + 1 :]:
        merge_scene(engine, s)
    recovered = h.content(engine)

    with h.fresh_database(pg_url_base, template_db) as clean_url:
        clean_engine = make_engine(clean_url)
        try:
            ensure_aoi(clean_engine, AOI, h.footprint(), h.UTM)
            if overlap:
                ensure_aoi(clean_engine, EAST, h.east_footprint(), h.UTM)
            for s in (*earlier, *scenes):
                merge_scene(clean_engine, s)
            clean = h.content(clean_engine)
        finally:
            clean_engine.dispose()

    figures = {
        "visible_partial_rows_after_kill": partial_rows,
        "visible_rows_while_paused": sum(abs(counts_while_paused[t] - counts_before[t]) for t in counts_before),
        "ledger_rows_committed_for_killed_key": committed,
        "advisory_locks_left": locks_left,
        "seconds_to_recover": round(seconds_to_recover, 3),
        "backend_terminated_by_hand": terminated_by_hand,
        "rerun_seconds": round(rerun_s, 3),
        "tables_differing_from_clean_run": sorted(t for t in clean if clean[t] != recovered[t]),
    }
    h.write_report("kill_mid_merge", {f"pause_at_{pause_at}" + ("_overlapping_aoi" if overlap else ""): figures})

    assert figures["visible_rows_while_paused"] == 0
    assert (partial_rows, committed, locks_left) == (0, 0, 0)
    assert content_after_kill == content_before
    assert not terminated_by_hand, "the dead client's transaction outlived it by 30 s"
    # The victim's date is lake D's first: found by the rerun, unless the first AOI found it already.
    assert not rerun.noop and rerun.observations > 0 and rerun.new_lakes == (0 if overlap else 1)
    assert recovered == clean and figures["tables_differing_from_clean_run"] == []
