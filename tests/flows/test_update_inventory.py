"""End to end: ``update_inventory`` over a generated AOI, checked against the generator's truth.

Guards the whole chain (search → pair → stack → segment → vectorise → attribute → merge):
growth makes versions, a new lake appears on its date, a drained lake is retired, a lake hidden
by cloud is not, lakes under 0.5 ha never enter, and a rerun changes nothing.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import geopandas as gpd
import pytest
from sqlalchemy import Engine, text

from demo.synthetic import DemoCatalog, generate_demo_catalog, load_truth
from flows.aoi import load_aoi

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return generate_demo_catalog(tmp_path_factory.mktemp("catalog"), size_px=256, seed=0)


def _lakes(engine: Engine) -> gpd.GeoDataFrame:
    with engine.connect() as conn:
        return gpd.read_postgis(
            "SELECT lake_id, status, area_m2, first_seen, geom FROM inventory.lake ORDER BY lake_id",
            conn,
            geom_col="geom",
        )


def _snapshot(engine: Engine) -> dict[str, object]:
    """Row counts and a content digest of every inventory table the merge writes."""
    out: dict[str, object] = {}
    with engine.connect() as conn:
        for table in ("lake", "lake_version", "lake_observation", "scene", "lake_lineage"):
            out[table] = conn.execute(
                text(
                    f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                    f"FROM inventory.{table} t"
                )
            ).one()
    return out


def _lake_for(lakes: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, name: str) -> gpd.GeoDataFrame:
    outline = truth[truth["lake"] == name].geometry.union_all()
    return lakes[lakes.intersects(outline)]


def test_update_inventory_against_truth(
    catalog: DemoCatalog,
    db_url: str,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefect_backend: None,
) -> None:
    from flows.update_inventory import update_inventory

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path / "home"))
    aoi = load_aoi(catalog.aoi_path)
    window = {
        "aoi": aoi,
        "start": min(catalog.dates) - timedelta(days=1),
        "end": max(catalog.dates) + timedelta(days=1),
        "source": f"local:{catalog.root}",
        "model": "baseline",
    }
    report = update_inventory(**window)
    truth = load_truth(catalog.truth_path)
    dates = sorted(catalog.dates)

    # One S2 date has no S1 within 7 days: skipped with that reason, the others processed.
    assert report.failed == 0, report.markdown()
    assert [o.reason for o in report.outcomes if o.status == "skipped"] == ["no S1 within 7 days"]
    assert report.processed == len(dates) - 1

    lakes = _lakes(engine)
    with engine.connect() as conn:
        versions = conn.execute(
            text(
                "SELECT lake_id, change_kind, area_change_m2 FROM inventory.lake_version ORDER BY lake_id, lower(valid)"
            )
        ).all()

    growing = _lake_for(lakes, truth, "growing")
    assert len(growing) == 1, "the growing lake keeps one identity"
    gid = int(growing.lake_id.iloc[0])
    grown = [v for v in versions if v.lake_id == gid]
    assert len(grown) >= 2 and all(v.area_change_m2 > 0 for v in grown[1:]), grown

    appearing = _lake_for(lakes, truth, "appearing")
    first_truth_day = min(truth[truth["lake"] == "appearing"]["date"])
    assert len(appearing) == 1
    assert appearing.first_seen.iloc[0].date() == first_truth_day

    draining = _lake_for(lakes, truth, "draining")
    assert list(draining.status) == ["disappeared"]

    clouded = _lake_for(lakes, truth, "clouded")
    assert list(clouded.status) == ["active"], "a lake hidden by cloud must not be retired"

    small = truth[truth["lake"].str.startswith("small")]
    assert len(small) > 0
    assert not lakes.intersects(small.geometry.union_all()).any(), "lakes under 0.5 ha are not mapped"

    # Rerun: same inputs, same model, same parameters → nothing written.
    before = _snapshot(engine)
    again = update_inventory(**window)
    assert _snapshot(engine) == before
    assert again.processed == 0 and again.failed == 0
    # Forced rerun through the merge: every key is already committed, so every merge is a no-op.
    forced = update_inventory(**window, rerun=True)
    assert forced.totals()["noop_merges"] == forced.processed == len(dates) - 1
    assert _snapshot(engine) == before
