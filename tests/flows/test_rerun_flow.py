"""`rerun` with a new model over the demo: the new results supersede the old ones.

The spectral baseline maps the demo first (with a permissive threshold and mapping unit); the rerun
with the shipped TerraMind model and the default parameters replaces it:
the lakes only the baseline mapped leave the current inventory and every as-of date, their
observations stay (``superseded_observations``), and the current inventory is the one a clean run
of the new model gives.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
import shapely
import sqlalchemy as sa

from db import queries
from db.engine import make_engine
from demo.synthetic import DemoCatalog, generate_demo_catalog
from flows.aoi import load_aoi
from tests.helpers.database import fresh_database

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return generate_demo_catalog(tmp_path_factory.mktemp("rerun-demo"), size_px=256, seed=0)


@pytest.fixture
def flow_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_backend: None) -> Iterator[None]:
    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path / "home"))
    yield


def _window(demo: DemoCatalog) -> dict[str, object]:
    return {
        "start": min(demo.dates) - timedelta(days=1),
        "end": max(demo.dates) + timedelta(days=1),
        "source": f"local:{demo.root}",
    }


def _outlines(engine: sa.Engine) -> list[shapely.Geometry]:
    return list(queries.lakes_as_of(engine, None).geometry)


def test_a_rerun_with_a_new_model_supersedes_the_old_lakes(
    demo: DemoCatalog, flow_env: None, db_url: str, pg_url_base: str, template_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.rerun import rerun
    from flows.update_inventory import update_inventory

    monkeypatch.setenv("DATABASE_URL", db_url)
    aoi = load_aoi(demo.aoi_path)
    # The old results: the spectral baseline, with a permissive threshold and mapping unit.
    monkeypatch.setenv("GLACIAL_LAKES_THRESHOLD", "0.2")
    monkeypatch.setenv("GLACIAL_LAKES_MIN_AREA_M2", "500")
    update_inventory(aoi=aoi, model="baseline", **_window(demo))  # type: ignore[arg-type]
    monkeypatch.delenv("GLACIAL_LAKES_THRESHOLD")
    monkeypatch.delenv("GLACIAL_LAKES_MIN_AREA_M2")
    engine = make_engine(db_url)
    try:
        old = _outlines(engine)
        report = rerun(aoi=aoi.name, model=None, **_window(demo))  # type: ignore[arg-type]
        new = queries.lakes_as_of(engine, None)
        as_of = [queries.lakes_as_of(engine, datetime.combine(d, time(12), tzinfo=UTC)) for d in demo.dates]
        with engine.connect() as conn:
            superseded = (
                conn.execute(sa.text("SELECT lake_id FROM inventory.lake WHERE status = 'superseded' ORDER BY lake_id"))
                .scalars()
                .all()
            )
            kept = conn.execute(
                sa.text("SELECT count(*) FROM inventory.superseded_observations WHERE lake_id = ANY(:ids)"),
                {"ids": list(superseded)},
            ).scalar_one()
            scenes = dict(
                conn.execute(
                    sa.text(
                        "SELECT superseded_by IS NULL, count(*) FROM inventory.scene GROUP BY superseded_by IS NULL"
                    )
                ).all()
            )
    finally:
        engine.dispose()
    with fresh_database(pg_url_base, template_db) as clean_url:
        monkeypatch.setenv("DATABASE_URL", clean_url)
        update_inventory(aoi=aoi, model=None, **_window(demo))  # type: ignore[arg-type]
        clean = make_engine(clean_url)
        try:
            expected = queries.lakes_as_of(clean, None)
        finally:
            clean.dispose()

    new_union = shapely.union_all(list(new.geometry))
    only_old = [g for g in old if not g.intersects(new_union)]
    assert only_old, "the baseline mapped no lake the model does not: the test would prove nothing"
    assert not report.failed and scenes[False] == scenes[True]  # every old scene superseded by one new
    assert len(superseded) >= len(only_old) and kept > 0
    ids = set(superseded)
    assert not ids & set(new["lake_id"]) and all(not ids & set(f["lake_id"]) for f in as_of)
    assert sorted(new["area_m2"].round(3)) == sorted(expected["area_m2"].round(3))
