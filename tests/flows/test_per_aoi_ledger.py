"""The "already processed" decision is per AOI: a second AOI on the same grid merges its own scenes.

Before, the scene ledger was global: the twin AOI found every scene "already processed" and its
own inventory stayed empty. Each AOI also keeps its own acquisition rows and one ``ingest_run``
row per flow run (the twin's rerun is a new row, not an overwrite).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from demo.synthetic import generate_demo_catalog
from flows.aoi import AoiSpec, load_aoi

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]


def test_a_twin_aoi_on_the_same_grid_processes_its_own_scenes(
    db_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_backend: None
) -> None:
    from flows.update_inventory import update_inventory

    catalog = generate_demo_catalog(tmp_path / "catalog", size_px=256, seed=0)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path / "home"))
    aoi = load_aoi(catalog.aoi_path)
    twin = AoiSpec(name=f"{aoi.name}-twin", geometry=aoi.geometry)
    window = {
        "start": min(catalog.dates) - timedelta(days=1),
        "end": max(catalog.dates) + timedelta(days=1),
        "source": f"local:{catalog.root}",
        "model": "baseline",
    }
    paired = len(catalog.dates) - 1  # one S2 date has no S1 within 7 days

    first = update_inventory(aoi=aoi, **window)
    assert first.processed == paired and first.failed == 0, first.markdown()
    second = update_inventory(aoi=twin, **window)
    assert second.processed == paired and second.failed == 0, second.markdown()
    again = update_inventory(aoi=twin, **window)
    assert again.processed == 0 and again.skipped == paired + 1, again.markdown()
    assert {o.reason for o in again.outcomes} == {"already processed", "no S1 within 7 days"}

    with engine.connect() as conn:
        scenes = dict(
            conn.execute(
                text("SELECT a.name, count(*) FROM inventory.scene s JOIN inventory.aoi a USING (aoi_id) GROUP BY 1")
            ).all()
        )
        statuses = conn.execute(
            text(
                "SELECT a.name, q.status, count(*) FROM inventory.acquisition q JOIN inventory.aoi a USING (aoi_id) "
                "WHERE q.kind = 'S2L2A' GROUP BY 1, 2 ORDER BY 1, 2"
            )
        ).all()
        runs = conn.execute(text("SELECT status FROM inventory.ingest_run ORDER BY run_id")).scalars().all()
    assert scenes == {aoi.name: paired, twin.name: paired}
    assert [tuple(r) for r in statuses] == [
        (aoi.name, "processed", paired),
        (aoi.name, "skipped", 1),
        (twin.name, "processed", paired),
        (twin.name, "skipped", 1),
    ]
    assert runs == ["committed", "committed", "committed"]
