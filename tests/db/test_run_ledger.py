"""The run ledger: one ``ingest_run`` row per flow run, never left running; acquisitions and
"already processed" per AOI.

The crash is real: a child process opens a run and is SIGKILLed; its connection (and so its
lease) dies with it, and the next start anywhere closes the row as ``crashed``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from db.ledger import AcquisitionRow, record_acquisitions, scene_keys_for_aoi, set_acquisition_status
from db.merge import ensure_aoi, merge_scene
from db.runs import CRASHED_REASON, close_stale_runs, recent_runs, start_run
from tests import helpers as h

pytestmark = pytest.mark.db
ROOT = Path(__file__).resolve().parents[2]

_ROW = sa.text("SELECT status, finished_at, failures, run_key, request FROM inventory.ingest_run WHERE run_id = :id")


def _row(engine: sa.Engine, run_id: int) -> sa.Row[tuple[object, ...]]:
    with engine.connect() as conn:
        return conn.execute(_ROW, {"id": run_id}).one()


def test_each_flow_run_has_its_own_row_even_for_the_same_window(engine: sa.Engine) -> None:
    aoi_id = ensure_aoi(engine, "khumbu", h.footprint(), h.UTM)
    request = {"start": "2024-07-01", "end": "2024-07-31", "source": "local:x", "model": "m"}
    first = start_run(engine, "same-window", aoi_id, str(uuid.uuid4()), request)
    first.finish("committed", {"found": 3, "processed": 3}, [])
    second = start_run(engine, "same-window", aoi_id, str(uuid.uuid4()), request)
    second.finish("partial", {"found": 3, "processed": 2, "failed": 1}, [{"acquisition": "S2X", "error": "bad"}])
    assert first.run_id != second.run_id
    assert _row(engine, first.run_id).status == "committed", "a rerun must not overwrite the earlier run's row"
    assert _row(engine, second.run_id).status == "partial"
    listed = recent_runs(engine, 10)
    assert [r.run_id for r in listed] == [second.run_id, first.run_id]
    assert listed[0].failures == [{"acquisition": "S2X", "error": "bad"}] and listed[0].aoi == "khumbu"
    assert listed[1].request == request


def test_an_exception_closes_the_row_failed_with_its_reason(engine: sa.Engine) -> None:
    with pytest.raises(RuntimeError, match="search exploded"):
        with start_run(engine, "k", None, str(uuid.uuid4()), {}) as lease:
            raise RuntimeError("search exploded")
    row = _row(engine, lease.run_id)
    assert row.status == "failed" and row.finished_at is not None
    assert row.failures == [{"error": "RuntimeError: search exploded"}]
    with pytest.raises(KeyboardInterrupt):
        with start_run(engine, "k", None, str(uuid.uuid4()), {}) as interrupted:
            raise KeyboardInterrupt
    assert _row(engine, interrupted.run_id).status == "crashed"


def test_a_killed_run_is_closed_crashed_by_the_next_start_and_a_live_one_is_not(db_url: str, engine: sa.Engine) -> None:
    live = start_run(engine, "live", None, str(uuid.uuid4()), {})  # this process holds its lease
    child = textwrap.dedent(
        f"""
        import os, signal, sys, uuid
        from db.engine import make_engine
        from db.runs import start_run
        lease = start_run(make_engine({db_url!r}), "doomed", None, str(uuid.uuid4()), {{}})
        print(lease.run_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no finally, no atexit: what kill -9 or the OOM killer does
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    doomed = int(proc.stdout.split()[0])
    assert _row(engine, doomed).status == "running"  # what the old ledger left forever

    # The server notices the dead connection at once (the socket closed); the next start sweeps.
    nxt = start_run(engine, "next", None, str(uuid.uuid4()), {})
    crashed = _row(engine, doomed)
    assert crashed.status == "crashed" and crashed.finished_at is not None
    assert crashed.failures == [{"error": CRASHED_REASON}]
    assert _row(engine, live.run_id).status == "running", "a run whose process is alive is not closed"
    assert close_stale_runs(engine) == []
    live.finish("committed", {}, [])
    nxt.finish("committed", {}, [])
    with engine.connect() as conn:
        locks = conn.execute(sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")).scalar_one()
    assert locks == 0, "a finished run keeps no lock"


def _product(product_id: str) -> AcquisitionRow:
    return AcquisitionRow(
        product_id=product_id,
        platform="sentinel-2a",
        kind="S2L2A",
        sensing_time=datetime(2024, 7, 4, tzinfo=UTC),
        footprint=h.footprint(),
        source="local:x",
        href=None,
        properties={},
    )


def test_acquisitions_keep_one_status_per_aoi(engine: sa.Engine) -> None:
    west = ensure_aoi(engine, "khumbu", h.footprint(), h.UTM)
    east = ensure_aoi(engine, "khumbu-twin", h.footprint(), h.UTM)
    for aoi_id in (west, east):
        record_acquisitions(engine, aoi_id, [_product("S2A_1")])
    set_acquisition_status(engine, west, ["S2A_1"], "processed")
    set_acquisition_status(engine, east, ["S2A_1"], "quarantined", "RasterInputError: x.tif: unreadable")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT a.name, q.status, q.error FROM inventory.acquisition q JOIN inventory.aoi a USING (aoi_id) "
                "WHERE q.product_id = 'S2A_1' ORDER BY a.name"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("khumbu", "processed", None),
        ("khumbu-twin", "quarantined", "RasterInputError: x.tif: unreadable"),
    ]
    with pytest.raises(ValueError, match="not one of"):
        set_acquisition_status(engine, west, ["S2A_1"], "clear")


def test_already_processed_is_decided_per_aoi_and_old_keys_still_count(engine: sa.Engine) -> None:
    west = ensure_aoi(engine, "khumbu", h.footprint(), h.UTM)
    twin = ensure_aoi(engine, "khumbu-twin", h.footprint(), h.UTM)  # the same grid: the same legacy keys
    scenes = h.scenario("khumbu")
    merge_scene(engine, scenes[0])  # merged under a key that names no AOI (as before keys did)
    legacy = scenes[0].scene_key
    candidates = {"S2_0": (f"{legacy}-khumbu", legacy)}
    keys, done = scene_keys_for_aoi(engine, west, candidates)
    assert keys == {"S2_0": legacy} and done == {"S2_0"}, "an old key still reads already processed in its AOI"
    keys, done = scene_keys_for_aoi(engine, twin, {"S2_0": (f"{legacy}-twin", legacy)})
    assert keys == {"S2_0": f"{legacy}-twin"} and done == set(), "another AOI's scene is not processed here"
