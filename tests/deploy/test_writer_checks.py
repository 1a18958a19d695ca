"""Services write as a ``lake_writer`` login, checked at start (issue 11, item 4).

``glacial-lakes worker`` and ``serve`` refuse a superuser, the schema owner, or any login outside
``lake_writer`` with exit 2 and one line saying how to make a writer login; a worker also needs a
Prefect API to poll. Run as child processes: the check is what a host's service manager sees.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from db.access import ensure_login, generate_password
from db.engine import connect_kwargs
from db.logins import NotAWriterError, check_writer_login
from db.schema import OWNER_ROLE, READER_ROLE
from flows.database import _engine
from tests.deploy.conftest import ROOT, child_env
from tests.helpers import admin_sql

pytestmark = [pytest.mark.db]


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=ROOT,
        env=child_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _login(db_url: str, group: str) -> tuple[str, str]:
    name, password = f"gl_chk_{uuid.uuid4().hex[:10]}", generate_password()
    with psycopg.connect(**connect_kwargs(db_url), autocommit=True) as conn:
        ensure_login(conn, name, group, password)
    return name, make_url(db_url).set(username=name, password=password).render_as_string(hide_password=False)


def test_superuser_owner_and_reader_are_refused_a_writer_passes(db_url: str, writer_url: str, pg_url_base: str) -> None:
    names = []
    try:
        cases = {"superuser": db_url}
        for label, group in (("owner", OWNER_ROLE), ("reader", READER_ROLE)):
            name, url = _login(db_url, group)
            names.append(name)
            cases[label] = url
        reasons = {}
        for label, url in cases.items():
            with pytest.raises(NotAWriterError) as refused:
                check_writer_login(_engine(url), "DATABASE_URL")
            reasons[label] = str(refused.value)
        assert "is a superuser" in reasons["superuser"]
        assert f"is a member of {OWNER_ROLE}" in reasons["owner"]
        assert "is not a member of lake_writer" in reasons["reader"]
        assert all("glacial-lakes db create-user NAME --role writer" in r for r in reasons.values())
        assert check_writer_login(_engine(writer_url), "DATABASE_URL").name == make_url(writer_url).username
    finally:
        for name in names:
            admin_sql(pg_url_base, f"DROP ROLE IF EXISTS {name}")


def test_worker_refuses_a_superuser_and_a_missing_prefect_api(db_url: str, writer_url: str, tmp_path: Path) -> None:
    refused = _cli(tmp_path, "worker", "--pool", "lakes-cpu", DATABASE_URL=db_url)
    assert refused.returncode == 2, refused.stderr
    assert "DATABASE_URL: login" in refused.stderr and "is a superuser" in refused.stderr
    assert make_url(db_url).password not in refused.stderr + refused.stdout  # type: ignore[operator]

    no_api = _cli(tmp_path, "worker", "--pool", "lakes-cpu", DATABASE_URL=writer_url)
    assert no_api.returncode == 2, no_api.stderr
    assert "PREFECT_API_URL: not set" in no_api.stderr

    down = _cli(
        tmp_path, "worker", "--pool", "lakes-cpu", DATABASE_URL=writer_url, PREFECT_API_URL="http://127.0.0.1:9/api"
    )
    assert down.returncode == 2, down.stderr
    assert "PREFECT_API_URL='http://127.0.0.1:9/api': the Prefect API does not answer" in down.stderr


def test_serve_refuses_a_superuser_before_starting_anything(db_url: str, tmp_path: Path) -> None:
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(
        '{"type": "Feature", "properties": {"name": "x"}, "geometry": {"type": "Polygon", '
        '"coordinates": [[[77.05, 43.03], [77.06, 43.03], [77.06, 43.04], [77.05, 43.03]]]}}'
    )
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "catalog.json").write_text(
        '{"type": "Catalog", "stac_version": "1.0.0", "id": "empty", "description": "empty", "links": []}'
    )
    done = _cli(
        tmp_path,
        "serve",
        "--aoi",
        str(aoi),
        "--source",
        f"local:{catalog}",
        DATABASE_URL=db_url,
        GLACIAL_LAKES_MODEL="baseline",
    )
    assert done.returncode == 2, done.stderr
    assert "is a superuser" in done.stderr
    assert not (tmp_path / "prefect" / "temporary-servers").exists() or not any(
        (tmp_path / "prefect" / "temporary-servers").glob("*.json")
    )
