"""The rolling window: since the AOI's last processed acquisition, else the last N days (issue 11, item 1)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from db.windows import last_processed_sensing_time
from flows.backfill import BackfillOrder, sub_windows
from flows.window import WindowError, resolve_window

TODAY = date(2026, 12, 1)


def test_given_window_is_used_as_given() -> None:
    w = resolve_window(date(2024, 7, 1), date(2024, 9, 30), 30, datetime(2025, 1, 1, tzinfo=UTC), TODAY)
    assert (w.start, w.end, w.basis) == (date(2024, 7, 1), date(2024, 9, 30), "given")


def test_first_window_of_an_aoi_looks_back_days_from_today() -> None:
    w = resolve_window(None, None, 30, None, TODAY)
    assert (w.start, w.end) == (TODAY - timedelta(days=30), TODAY)
    assert "last 30 days" in w.basis


def test_later_windows_start_on_the_last_processed_day_utc() -> None:
    w = resolve_window(None, None, 30, datetime(2024, 9, 22, 23, 30, tzinfo=UTC), TODAY)
    assert (w.start, w.end) == (date(2024, 9, 22), TODAY)
    assert "since the last processed acquisition (2024-09-22)" in w.basis
    # 20:30 at UTC-05:00 is 01:30 the next day in UTC: the window's days are UTC days.
    local = datetime.fromisoformat("2024-09-22T20:30:00-05:00")
    assert resolve_window(None, None, 30, local, TODAY).start == date(2024, 9, 23)


@pytest.mark.parametrize(
    ("start", "end", "days", "last", "message"),
    [
        (date(2024, 9, 30), date(2024, 7, 1), 30, None, "end 2024-07-01 is before start 2024-09-30"),
        (None, date(2024, 7, 1), 30, datetime(2024, 9, 22, tzinfo=UTC), "give start as well"),
        (None, None, 0, None, "days 0"),
        (None, None, 10**9, None, "days 1000000000"),
    ],
)
def test_impossible_windows_are_refused_naming_the_parameter(
    start: date | None, end: date | None, days: int, last: datetime | None, message: str
) -> None:
    with pytest.raises(WindowError, match=message):
        resolve_window(start, end, days, last, TODAY)


def test_backfill_sub_windows_cover_the_window_once_in_either_order() -> None:
    oldest = sub_windows(date(2024, 7, 1), date(2024, 9, 30), 30, BackfillOrder.OLDEST_FIRST)
    assert oldest == [
        (date(2024, 7, 1), date(2024, 7, 30)),
        (date(2024, 7, 31), date(2024, 8, 29)),
        (date(2024, 8, 30), date(2024, 9, 28)),
        (date(2024, 9, 29), date(2024, 9, 30)),
    ]
    assert sub_windows(date(2024, 7, 1), date(2024, 9, 30), 30, BackfillOrder.NEWEST_FIRST) == oldest[::-1]
    with pytest.raises(WindowError, match="before start"):
        sub_windows(date(2024, 9, 30), date(2024, 7, 1), 30, BackfillOrder.OLDEST_FIRST)


@pytest.mark.db
def test_last_processed_acquisition_is_per_aoi_and_ignores_imported_epochs(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        ids = {}
        for name in ("a", "b"):
            ids[name] = conn.execute(
                sa.text(
                    "INSERT INTO inventory.aoi (name, geom, utm_epsg) VALUES "
                    "(:n, ST_Multi(ST_MakeEnvelope(77, 43, 77.1, 43.1, 4326)), 32643) RETURNING aoi_id"
                ),
                {"n": name},
            ).scalar_one()
        rows = [
            ("a1", ids["a"], "2024-07-04T05:56:41Z", '{"params": "{}"}'),
            ("a2", ids["a"], "2024-09-22T05:56:41Z", '{"params": "{}"}'),
            ("a-import", ids["a"], "2025-01-01T00:00:00Z", "{}"),  # an imported inventory's epoch
            ("b1", ids["b"], "2025-06-01T05:56:41Z", '{"params": "{}"}'),
        ]
        for key, aoi_id, when, inputs in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO inventory.scene (scene_key, aoi_id, sensing_time, s2_product_id, inputs, "
                    "model_version, params_hash) VALUES (:k, :a, :t, :k, CAST(:i AS jsonb), 'm', 'p')"
                ),
                {"k": key, "a": aoi_id, "t": when, "i": inputs},
            )
    assert last_processed_sensing_time(engine, "a") == datetime(2024, 9, 22, 5, 56, 41, tzinfo=UTC)
    assert last_processed_sensing_time(engine, "b") == datetime(2025, 6, 1, 5, 56, 41, tzinfo=UTC)
    assert last_processed_sensing_time(engine, "never-seen") is None
