"""What the rolling window reads from the ledger: the AOI's last processed acquisition.

Pure SQL, the caller passes the engine (or a connection). Times are UTC (``timestamptz``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Engine, text

from db.ledger import PARAMS_INPUT
from db.schema import SCHEMA

_LAST_PROCESSED = text(
    f"""
    SELECT max(s.sensing_time)
    FROM {SCHEMA}.scene s JOIN {SCHEMA}.aoi a USING (aoi_id)
    WHERE a.name = :aoi AND s.inputs ? '{PARAMS_INPUT}'
    """
)
"""Scenes the pipeline merged state their parameters; an imported inventory's epoch does not
(it was not an acquisition processed here, and must not move the window)."""


def last_processed_sensing_time(conn: Connection | Engine, aoi_name: str) -> datetime | None:
    """Sensing time (UTC) of the AOI's latest Sentinel-2 acquisition merged by the pipeline; None when none.

    Per AOI: another AOI's scenes, and scenes of an imported inventory, never count.
    """
    if isinstance(conn, Engine):
        with conn.connect() as c:
            return last_processed_sensing_time(c, aoi_name)
    value = conn.execute(_LAST_PROCESSED, {"aoi": aoi_name}).scalar_one()
    return value if isinstance(value, datetime) else None
