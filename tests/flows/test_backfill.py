"""``backfill`` (issue 11, item 1): a past window in sub-windows, newest first; the same inventory as in order.

The merge places each scene by its sensing time and recomputes what it touches, so running the
demo's five dates newest-first, one sub-window at a time, must leave every inventory table with
the same content (digest) as one in-order ``update_inventory`` over the window.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from db.engine import make_engine
from demo.synthetic import DemoCatalog, generate_demo_catalog
from flows.aoi import load_aoi
from tests.helpers import fresh_database
from tests.helpers.digests import content

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return generate_demo_catalog(tmp_path_factory.mktemp("catalog"), size_px=256, seed=0)


def test_backfill_newest_first_gives_the_in_order_inventory(
    catalog: DemoCatalog,
    db_url: str,
    engine: Engine,
    pg_url_base: str,
    template_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefect_backend: None,
) -> None:
    from flows.backfill import BackfillOrder, backfill
    from flows.update_inventory import update_inventory

    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path / "home"))
    aoi = load_aoi(catalog.aoi_path)
    window = {
        "aoi": aoi,
        "source": f"local:{catalog.root}",
        "start": min(catalog.dates) - timedelta(days=1),
        "end": max(catalog.dates) + timedelta(days=1),
        "model": "baseline",
    }
    monkeypatch.setenv("DATABASE_URL", db_url)
    reports = backfill(**window, chunk_days=20, order=BackfillOrder.NEWEST_FIRST)
    processed = [o.product_id for r in reports for o in r.outcomes if o.status == "processed"]
    assert len(reports) == 5 and len(processed) == 4  # 83 days in 20-day windows; one date has no S1
    assert processed == sorted(processed, key=lambda p: p.split("_")[2], reverse=True)  # newest first

    with fresh_database(pg_url_base, template_db) as in_order_url:
        monkeypatch.setenv("DATABASE_URL", in_order_url)
        report = update_inventory(**window)
        assert report.processed == 4 and report.failed == 0, report.markdown()
        in_order = make_engine(in_order_url)
        try:
            assert content(engine, None) == content(in_order, None)
        finally:
            in_order.dispose()
