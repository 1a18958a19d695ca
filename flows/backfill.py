"""``backfill``: a past window, cut into sub-windows run in any order; the inventory is the same.

Each sub-window is one ``update_inventory`` run (a subflow: its own state, ledger row and report).
The merge places every scene by its sensing time and recomputes the history it touches, so the
order the sub-windows run in changes nothing in the inventory; newest first is the default, so
the recent past is queryable first. Sub-windows are disjoint in Sentinel-2 sensing days; their
Sentinel-1 and DEM searches are widened by the pairing tolerance, so a scene at a sub-window's
edge still finds its partner in the next one.

No postponed annotations (``from __future__ import annotations``) here: a worker rebuilds the
parameter model in a fresh process, where string annotations would name unresolvable types.
"""

from datetime import date, timedelta
from enum import StrEnum
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from flows.aoi import AoiSpec
from flows.report import RunReport
from flows.update_inventory import update_inventory
from flows.window import MAX_DAYS, WindowError

__all__ = ["BackfillError", "BackfillOrder", "backfill", "sub_windows"]


class BackfillOrder(StrEnum):
    """Order the sub-windows run in (the inventory is the same either way)."""

    NEWEST_FIRST = "newest-first"
    OLDEST_FIRST = "oldest-first"


class BackfillError(RuntimeError):
    """Some sub-windows did not complete; the others did (their scenes are in the inventory)."""


def sub_windows(start: date, end: date, chunk_days: int, order: BackfillOrder) -> list[tuple[date, date]]:
    """[start, end] cut into consecutive windows of ``chunk_days`` days (the last may be shorter), in ``order``.

    Raises:
        WindowError: ``end`` before ``start``, or ``chunk_days`` outside [1, MAX_DAYS].
    """
    if end < start:
        raise WindowError(f"end {end} is before start {start}")
    if not 1 <= chunk_days <= MAX_DAYS:
        raise WindowError(f"chunk_days {chunk_days}: must be in [1, {MAX_DAYS}]")
    windows: list[tuple[date, date]] = []
    first = start
    while first <= end:
        last = min(first + timedelta(days=chunk_days - 1), end)
        windows.append((first, last))
        first = last + timedelta(days=1)
    return windows[::-1] if order is BackfillOrder.NEWEST_FIRST else windows


@flow(name="backfill", log_prints=False)
def backfill(
    aoi: AoiSpec,
    source: str,
    start: date,
    end: date,
    chunk_days: Annotated[int, Field(ge=1, le=MAX_DAYS)] = 30,
    order: BackfillOrder = BackfillOrder.NEWEST_FIRST,
    model: str | None = None,
) -> list[RunReport]:
    """Update ``aoi`` over the past window [start, end] (UTC days, inclusive), ``chunk_days`` at a time.

    Args:
        aoi: the area (EPSG:4326) and its name.
        source: ``local:DIR`` or ``stac:URL``.
        start: first sensing day, inclusive (UTC).
        end: last sensing day, inclusive (UTC).
        chunk_days: days per sub-window (one ``update_inventory`` run each).
        order: ``newest-first`` or ``oldest-first``.
        model: segmenter spec; default from ``GLACIAL_LAKES_MODEL``.

    Returns:
        The reports of the sub-windows, in the order they ran.

    Raises:
        BackfillError: after every sub-window ran, when any did not complete (named with its state).
    """
    logger = get_run_logger()
    windows = sub_windows(start, end, chunk_days, order)
    reports: list[RunReport] = []
    unfinished: list[str] = []
    for i, (first, last) in enumerate(windows, 1):
        logger.info("[%d/%d] %s: %s … %s", i, len(windows), aoi.name, first, last)
        state = update_inventory(aoi=aoi, source=source, start=first, end=last, model=model, return_state=True)
        if state.is_completed():
            reports.append(state.result())
        else:  # one sub-window never stops the others
            unfinished.append(f"{first} … {last}: {state.name} ({state.message or 'no message'})")
    if unfinished:
        raise BackfillError(
            f"{len(unfinished)} of {len(windows)} sub-windows did not complete: {'; '.join(unfinished)}"
        )
    return reports
