"""The update flow end to end as a ``lake_writer`` login on an external database (DATABASE_URL).

Nothing in the flow may need more than the writer's privileges: no DDL, no superuser, no
migration (the database is at head; the flow only checks the revision).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from db.access import ensure_login, generate_password
from db.engine import connect_kwargs
from db.schema import WRITER_ROLE
from demo.synthetic import DemoCatalog, generate_demo_catalog
from flows.aoi import load_aoi
from tests import helpers as h
from tests.helpers import admin_sql

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return generate_demo_catalog(tmp_path_factory.mktemp("catalog"), size_px=256, seed=0)


@pytest.fixture
def writer_url(db_url: str, pg_url_base: str) -> Iterator[str]:
    """``db_url`` as a fresh login in ``lake_writer`` (password generated, sent as a SCRAM verifier)."""
    name, password = f"gl_flow_{uuid.uuid4().hex[:10]}", generate_password()
    with psycopg.connect(**connect_kwargs(db_url), autocommit=True) as conn:
        ensure_login(conn, name, WRITER_ROLE, password)
    try:
        yield make_url(db_url).set(username=name, password=password).render_as_string(hide_password=False)
    finally:
        admin_sql(pg_url_base, f"DROP ROLE IF EXISTS {name}")


def test_update_inventory_runs_end_to_end_as_a_writer_login(
    catalog: DemoCatalog,
    writer_url: str,
    engine: sa.Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefect_backend: None,
) -> None:
    from flows.database import ready_engine
    from flows.settings import load_settings
    from flows.update_inventory import update_inventory

    monkeypatch.setenv("DATABASE_URL", writer_url)
    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path / "home"))
    with ready_engine(load_settings()).connect() as conn:
        user, superuser = conn.execute(
            sa.text("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
        ).one()
    report = update_inventory(
        aoi=load_aoi(catalog.aoi_path),
        start=min(catalog.dates) - timedelta(days=1),
        end=max(catalog.dates) + timedelta(days=1),
        source=f"local:{catalog.root}",
        model="baseline",
    )
    with engine.connect() as conn:  # read back as the superuser
        lakes = conn.execute(sa.text("SELECT count(*) FROM inventory.lake")).scalar_one()
        scenes = conn.execute(sa.text("SELECT count(*) FROM inventory.scene")).scalar_one()
    h.write_report("access", {"flow_as_writer": {"processed": report.processed, "lakes": lakes, "scenes": scenes}})

    assert user == make_url(writer_url).username and superuser is False
    assert report.failed == 0, report.markdown()
    assert report.processed >= 1 and scenes == report.processed and lakes > 0
