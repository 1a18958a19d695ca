"""Which time windows a run searches: S2 inside the run's window, its partners around it (pure).

An S2 scene sensed on the window's last day may pair with an S1 acquisition up to
``max_pair_days`` later, so partners (S1 GRD / RTC, and the timeless DEM) are searched over the
window widened by the pairing tolerance on each side; S2 stays inside the window. Partners are
then kept only within that tolerance of the window (to the second, not the day).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta

from shapely.geometry.base import BaseGeometry

from core.errors import SettingsError
from tasks.acquisition import Acquisition, AcquisitionSource

__all__ = ["PRIMARY_KINDS", "partner_window", "search_for_pairing"]

PRIMARY_KINDS = frozenset({"S2L2A"})
"""Kinds that make scenes: searched inside the window only."""


def partner_window(start: date, end: date, max_pair_days: float) -> tuple[datetime, datetime]:
    """[start 00:00 − tolerance, end 23:59:59.999999 + tolerance], UTC.

    Raises:
        SettingsError: ``max_pair_days`` is negative or not a number.
    """
    if not max_pair_days >= 0:
        raise SettingsError(f"max pair days must be a number ≥ 0, got {max_pair_days!r}")
    pad = timedelta(days=max_pair_days)
    return datetime.combine(start, time.min, tzinfo=UTC) - pad, datetime.combine(end, time.max, tzinfo=UTC) + pad


def search_for_pairing(
    source: AcquisitionSource,
    aoi: BaseGeometry,
    start: date,
    end: date,
    kinds: Sequence[str],
    max_pair_days: float,
) -> list[Acquisition]:
    """S2 of [start, end] and their partners of the widened window, sorted by time then id."""
    primary = [k for k in kinds if k in PRIMARY_KINDS]
    partners = [k for k in kinds if k not in PRIMARY_KINDS]
    found = source.search(aoi, start, end, primary) if primary else []
    if partners:
        lo, hi = partner_window(start, end, max_pair_days)
        found += [
            a
            for a in source.search(aoi, lo.date(), hi.date(), partners)
            if a.kind == "DEM" or lo <= a.sensing_time <= hi
        ]
    return sorted(found, key=lambda a: (a.sensing_time, a.product_id))
