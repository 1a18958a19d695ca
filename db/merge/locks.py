"""The merge's locks: one per AOI, and one per grid cell of the ground a scene covers.

Identity is spatial (an AOI is a unit of processing, not an owner of lakes), so two scenes that
may find, continue or see dry the same lake must merge one after the other whichever AOI they
belong to. The ground is cut into :data:`CELL_DEG` cells in EPSG:4326; a merge takes a
transaction-scoped advisory lock on every cell its scene's extent (outlines and valid footprint)
touches, in ascending key order, so merges on overlapping ground queue and no two can deadlock
on these locks. A lake that reaches beyond those cells is held by a row lock when it is fetched
as a candidate (:mod:`db.merge.candidates`).

The AOI's own lock (first key :data:`ADVISORY_NAMESPACE`) is taken first: it keeps the ledger
and parameter checks of one AOI serial, as before.

Change together: the two namespaces below and the lock probe of
``tests/faults/test_kill_mid_merge.py`` (which asserts no advisory lock outlives a killed merge).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sqlalchemy import Connection, text

ADVISORY_NAMESPACE = 0x4C414B45
"""First key of ``pg_advisory_xact_lock(namespace, hashtext(aoi_name))`` ('LAKE' in ASCII)."""

CELL_NAMESPACE = 0x43454C4C
"""First key of the ground-cell locks ('CELL' in ASCII)."""

CELL_DEG = 0.5
"""Edge of a lock cell, degrees of longitude and latitude (EPSG:4326): 720 × 360 cells."""

_COLUMNS = round(360 / CELL_DEG)
_ROWS = round(180 / CELL_DEG)

_LOCK_AOI = text("SELECT pg_advisory_xact_lock(:ns, hashtext(:aoi))")
# WITH ORDINALITY + ORDER BY n: the locks are taken in the order of the (sorted) array.
_LOCK_CELLS = text(
    "SELECT count(pg_advisory_xact_lock(:ns, c.k)) FROM "
    "(SELECT k FROM unnest(CAST(:cells AS integer[])) WITH ORDINALITY AS u(k, n) ORDER BY n OFFSET 0) AS c"
)


def cells(bounds: Sequence[float]) -> list[int]:
    """Keys of the lock cells a lon/lat box (x0, y0, x1, y1; EPSG:4326, degrees) touches, ascending.

    Longitudes are taken modulo 360 and latitudes clamped to [-90, 90]; a box that crosses the
    antimeridian must be given as two boxes.
    """
    x0, y0, x1, y1 = (float(v) for v in bounds)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 < x0 or y1 < y0:
        raise ValueError(f"not a lon/lat box: {tuple(bounds)}")
    col0, col1 = math.floor((x0 + 180) / CELL_DEG), math.floor((x1 + 180) / CELL_DEG)
    row0 = min(max(math.floor((y0 + 90) / CELL_DEG), 0), _ROWS - 1)
    row1 = min(max(math.floor((y1 + 90) / CELL_DEG), 0), _ROWS - 1)
    cols = {c % _COLUMNS for c in range(col0, col1 + 1)}
    return sorted(c * _ROWS + r for c in cols for r in range(row0, row1 + 1))


def lock_aoi(conn: Connection, aoi_name: str) -> None:
    """Wait for, then hold until the transaction ends, the lock of AOI ``aoi_name``."""
    conn.execute(_LOCK_AOI, {"ns": ADVISORY_NAMESPACE, "aoi": aoi_name})


def region(bounds: Sequence[float]) -> tuple[float, float, float, float] | None:
    """The lon/lat box the cells of ``bounds`` cover together (just inside their edges); None across ±180°."""
    x0, y0, x1, y1 = (float(v) for v in bounds)
    c0, c1 = math.floor((x0 + 180) / CELL_DEG), math.floor((x1 + 180) / CELL_DEG)
    if c0 < 0 or c1 >= _COLUMNS:
        return None
    r0 = min(max(math.floor((y0 + 90) / CELL_DEG), 0), _ROWS - 1)
    r1 = min(max(math.floor((y1 + 90) / CELL_DEG), 0), _ROWS - 1)
    # Pulled in by a hair: a point on the region's edge may belong to the neighbouring cell.
    e = 1e-9
    return (
        c0 * CELL_DEG - 180 + e,
        r0 * CELL_DEG - 90 + e,
        (c1 + 1) * CELL_DEG - 180 - e,
        (r1 + 1) * CELL_DEG - 90 - e,
    )


def lock_ground(conn: Connection, bounds: Sequence[float] | None) -> tuple[float, float, float, float] | None:
    """Wait for, then hold until the transaction ends, the cells of a lon/lat box; returns their region.

    The region (:func:`region`) is the ground no other merge can reach while these are held: a
    lake whose box lies inside it can only be a candidate of merges that lock one of these cells.
    ``None`` (a scene with neither outlines nor a valid footprint) locks nothing: it can neither
    create nor retire a lake.
    """
    if bounds is None:
        return None
    keys = cells(bounds)
    conn.execute(_LOCK_CELLS, {"ns": CELL_NAMESPACE, "cells": keys})
    return region(bounds)
