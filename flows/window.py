"""The sensing-date window of one ``update_inventory`` run: given, or rolling.

Rolling (``start`` unset): the window starts on the day of the AOI's last processed acquisition
(the ledger's committed scenes of that AOI, :func:`db.windows.last_processed_sensing_time`), so
every scheduled run picks up where the previous one ended; an AOI with nothing processed yet
looks back ``days`` days from ``end``. ``end`` unset: today (UTC). The last processed day itself
is inside the window: a later acquisition of that day is found, the processed ones are skipped
by the scene ledger. Days are calendar days, UTC, both ends inclusive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine

from core.errors import InputError

DEFAULT_DAYS = 30
"""Look-back of an AOI's first rolling window, days: Sentinel-2 revisits every 5 days (2 satellites)."""
MAX_DAYS = 36_500
"""Largest look-back, days (a century): a typo like ``days=3e9`` must fail, not overflow a date."""


class WindowError(InputError):
    """A window that cannot be searched (end before start, or a rolling start after the given end)."""


@dataclass(frozen=True)
class Window:
    """Sensing days [start, end], UTC, inclusive; ``basis`` says how the start was chosen."""

    start: date
    end: date
    basis: str
    """``given``, ``since the last processed acquisition (DAY)`` or ``the last N days (nothing processed yet)``."""

    def describe(self) -> str:
        """``2024-09-22 … 2026-12-01 (since the last processed acquisition (2024-09-22))``."""
        return f"{self.start} … {self.end} ({self.basis})"


def resolve_window(
    start: date | None, end: date | None, days: int, last_processed: datetime | None, today: date
) -> Window:
    """The window of a run from its parameters and the AOI's last processed sensing time (UTC).

    Raises:
        WindowError: ``end`` before ``start``; a rolling start (the last processed day) after a
            given ``end``; ``days`` outside [1, :data:`MAX_DAYS`].
    """
    if not 1 <= days <= MAX_DAYS:
        raise WindowError(f"days {days}: must be in [1, {MAX_DAYS}]")
    last = end if end is not None else today
    if start is not None:
        first, basis = start, "given"
    elif last_processed is not None:
        first = last_processed.astimezone(UTC).date()
        basis = f"since the last processed acquisition ({first})"
        if first > last:
            raise WindowError(f"end {last}: before the AOI's last processed acquisition ({first}); give start as well")
    else:
        first, basis = last - timedelta(days=days), f"the last {days} days (nothing processed yet)"
    if last < first:
        raise WindowError(f"end {last} is before start {first}")
    return Window(first, last, basis)


def rolling_window(engine: Engine, aoi_name: str, start: date | None, end: date | None, days: int) -> Window:
    """:func:`resolve_window` with the AOI's last processed acquisition read from the ledger and today's UTC date."""
    from db.windows import last_processed_sensing_time  # the ledger's queries load geopandas: not at CLI start

    last = last_processed_sensing_time(engine, aoi_name) if start is None else None
    return resolve_window(start, end, days, last, datetime.now(UTC).date())
