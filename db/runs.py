"""``ingest_run``: one row per flow run, opened with a lease and closed in every outcome.

A run's row is ``running`` only while its process holds the row's lease: a session-level
advisory lock ``(RUN_LOCK_NAMESPACE, run_id)`` on a connection of its own, taken in the same
transaction that inserts the row (so no other session ever sees the row without its lock). A
process that dies (``kill -9``, OOM, a lost host) loses its connection and so its lock; the next
:func:`start_run` anywhere finds the row ``running`` with no lock held and closes it ``crashed``.
A row is therefore never left ``running``. Liveness is the database's, not Prefect's: a run on
one temporary Prefect server is not visible on another, but every run shares the inventory.

Pure SQL helpers; the caller passes the engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

from sqlalchemy import Connection, Engine, func, text, update
from sqlalchemy.dialects.postgresql import insert

from core.errors import interrupted
from db.schema import SCHEMA, ingest_run

RUN_LOCK_NAMESPACE = 0x52554E53
"""First key of a run's advisory lock ('RUNS' in ASCII; the merge's locks use 'LAKE'). The second
key is the run id (int4: the ledger holds fewer than 2³¹ runs)."""

RUN_STATUSES = ("running", "committed", "partial", "failed", "crashed")
"""``committed``: every scene landed; ``partial``: some landed, some failed; ``failed``: scenes
failed and none landed, or the run itself raised; ``crashed``: its process died (closed by a later
run)."""

CRASHED_REASON = "the run's process ended without closing its row (killed or lost its database connection)"

_STALE = text(
    f"""
    UPDATE {SCHEMA}.ingest_run r
    SET status = 'crashed', finished_at = now(),
        failures = r.failures || jsonb_build_array(jsonb_build_object('error', CAST(:reason AS text)))
    WHERE r.status = 'running' AND NOT EXISTS (
        SELECT 1 FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.classid = CAST(:ns AS oid) AND l.objid = CAST(r.run_id AS oid)
    )
    RETURNING r.run_id
    """
)


class RunLease:
    """The open ``ingest_run`` row of this process's flow run and the lock that says it is alive.

    Close it with :meth:`finish`, or use it as a context manager, which closes a run left open
    as ``failed`` (an exception) or ``crashed`` (a signal or interrupt unwinding it); the lock
    goes with the connection.
    """

    def __init__(self, engine: Engine, conn: Connection, run_id: int) -> None:
        self.engine = engine
        self.run_id = run_id
        self._conn: Connection | None = conn

    @property
    def open(self) -> bool:
        """Whether the row is still ``running`` (not yet finished by this process)."""
        return self._conn is not None

    def finish(self, status: str, counts: Mapping[str, object], failures: Sequence[Mapping[str, object]]) -> None:
        """Close the row with its final status, counts and failures, then drop the lease."""
        if status not in RUN_STATUSES or status == "running":
            raise ValueError(f"run status {status!r}: not a final one of {RUN_STATUSES}")
        with self.engine.begin() as conn:
            conn.execute(
                update(ingest_run)
                .where(ingest_run.c.run_id == self.run_id)
                .values(
                    status=status, counts=dict(counts), failures=[dict(f) for f in failures], finished_at=func.now()
                )
            )
        self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute(
                text("SELECT pg_advisory_unlock(CAST(:ns AS int), CAST(:id AS int))"),
                {"ns": RUN_LOCK_NAMESPACE, "id": self.run_id},
            )
            conn.commit()
        finally:
            conn.close()  # a pooled connection must not keep the lock; closing invalidates nothing else

    def __enter__(self) -> RunLease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.open:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500] if exc is not None else "closed unfinished"
            # An error of the run is 'failed'; a signal or interrupt unwinding it (SIGTERM from a
            # cancelling worker, Ctrl-C) is what a crash is, only caught in time.
            status = "crashed" if exc is not None and interrupted(exc) else "failed"
            self.finish(status, {}, [{"error": reason}])


def close_stale_runs(engine: Engine) -> list[int]:
    """Close ``running`` rows whose lease no process holds as ``crashed``; returns their run ids."""
    with engine.begin() as conn:
        rows = conn.execute(_STALE, {"ns": RUN_LOCK_NAMESPACE, "reason": CRASHED_REASON})
        return sorted(int(r[0]) for r in rows)


def start_run(
    engine: Engine, run_key: str, aoi_id: int | None, flow_run_id: str | None, request: Mapping[str, object]
) -> RunLease:
    """Open this flow run's row (a new one per flow run; the same one when Prefect retries the run).

    Stale rows (see the module docstring) are closed first. ``request`` is what was asked (window,
    source, model): never a credential (the caller strips URL queries).
    """
    close_stale_runs(engine)
    stmt = (
        insert(ingest_run)
        .values(run_key=run_key, aoi_id=aoi_id, flow_run_id=flow_run_id, status="running", request=dict(request))
        .on_conflict_do_update(
            index_elements=["flow_run_id"],
            set_={"status": "running", "finished_at": None, "run_key": run_key, "request": dict(request)},
        )
        .returning(ingest_run.c.run_id)
    )
    conn = engine.connect()
    try:
        run_id = int(conn.execute(stmt).scalar_one())
        # Same transaction as the insert: the row is never visible without its lock.
        conn.execute(
            text("SELECT pg_advisory_lock(CAST(:ns AS int), CAST(:id AS int))"),
            {"ns": RUN_LOCK_NAMESPACE, "id": run_id},
        )
        conn.commit()
    except BaseException:
        conn.close()
        raise
    return RunLease(engine, conn, run_id)


@dataclass(frozen=True)
class RunRow:
    """One ``ingest_run`` row as ``glacial-lakes runs`` lists it (times UTC)."""

    run_id: int
    flow_run_id: str | None
    aoi: str | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    counts: Mapping[str, object]
    failures: Sequence[Mapping[str, object]]
    request: Mapping[str, object]


_RECENT = text(
    f"""
    SELECT r.run_id, r.flow_run_id, a.name AS aoi, r.status, r.started_at, r.finished_at,
           r.counts, r.failures, r.request
    FROM {SCHEMA}.ingest_run r LEFT JOIN {SCHEMA}.aoi a USING (aoi_id)
    WHERE CAST(:aoi AS text) IS NULL OR a.name = :aoi
    ORDER BY r.started_at DESC, r.run_id DESC
    LIMIT :limit
    """
)


def recent_runs(engine: Engine, limit: int = 20, aoi: str | None = None) -> list[RunRow]:
    """The latest ``limit`` runs (newest first), of one AOI or all."""
    with engine.connect() as conn:
        return [RunRow(**r._mapping) for r in conn.execute(_RECENT, {"aoi": aoi, "limit": limit})]
