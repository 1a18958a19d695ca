"""End to end: the demo world's glacier-contact lake is typed as such once the demo's glaciers are imported.

``update_inventory`` over the 256 px demo catalog, then :func:`flows.demo.import_demo_glaciers`
(the demo's own step): the mapped lake over the truth's ``glacier_contact`` lake is
``proglacial_contact``, every other mapped lake is typed but not in contact, and the GeoPackage
export carries the context columns.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
from sqlalchemy import Engine

from db import queries
from demo.synthetic import DemoCatalog, generate_demo_catalog, load_truth
from flows.demo import import_demo_glaciers
from tests.helpers.flow_runs import demo_window

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return generate_demo_catalog(tmp_path_factory.mktemp("catalog"), size_px=256, seed=0)


def test_demo_contact_lake_is_typed_proglacial_contact(
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
    window = demo_window(catalog)
    update_inventory(**window)
    types = import_demo_glaciers(engine, catalog.root / "glaciers.geojson", window["aoi"].name)
    again = import_demo_glaciers(engine, catalog.root / "glaciers.geojson", window["aoi"].name)  # a rerun
    lakes = queries.lakes_as_of(engine, None, aoi=window["aoi"].name)
    truth = load_truth(catalog.truth_path)
    contact_truth = truth[truth.glacier_contact].geometry.union_all()
    on_contact = lakes[lakes.intersects(contact_truth)]
    others = lakes[~lakes.intersects(contact_truth)]
    out = tmp_path / "lakes.gpkg"
    lakes.to_file(out, driver="GPKG", layer="lakes")
    back = gpd.read_file(out, layer="lakes")

    assert set(truth[truth.glacier_contact].lake) == {"contact"}
    assert len(on_contact) == 1 and on_contact.lake_type.iloc[0] == "proglacial_contact"
    assert bool(on_contact.glacier_contact.iloc[0]) and on_contact.glacier_distance_m.iloc[0] <= 10.0
    assert on_contact.rgi_id.iloc[0].startswith("DEMO-")
    assert len(others) > 0 and set(others.lake_type) <= {"unconnected_glacial", "non_glacial"}
    assert not others.glacier_contact.astype(bool).any() and (others.glacier_distance_m > 100).all()
    assert types == again and sum(types.values()) == len(lakes) and types["proglacial_contact"] == 1
    assert list(back.lake_type) == list(lakes.lake_type)
    assert back.glacier_distance_m.tolist() == pytest.approx(lakes.glacier_distance_m.tolist())
