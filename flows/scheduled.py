"""``rolling_update``: the scheduled wrapper that updates an AOI over the last N days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow

from flows.aoi import AoiSpec
from flows.report import RunReport
from flows.update_inventory import update_inventory


@flow(name="rolling-update")
def rolling_update(aoi: AoiSpec, source: str, days: int = 30) -> RunReport:
    """Update ``aoi`` with acquisitions sensed in the last ``days`` days (UTC)."""
    today = datetime.now(UTC).date()
    return update_inventory(aoi=aoi, start=today - timedelta(days=days), end=today, source=source)
