"""Fixtures of the deployment tests: a writer login, a clean environment for child processes."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from db.access import ensure_login, generate_password
from db.engine import connect_kwargs
from db.schema import WRITER_ROLE
from tests.helpers import admin_sql

ROOT = Path(__file__).resolve().parents[2]
"""The checkout: child processes run from here, with it first on ``PYTHONPATH``."""


@pytest.fixture
def writer_url(db_url: str, pg_url_base: str) -> Iterator[str]:
    """``db_url`` as a fresh login in ``lake_writer`` (password generated, sent as a SCRAM verifier)."""
    name, password = f"gl_deploy_{uuid.uuid4().hex[:10]}", generate_password()
    with psycopg.connect(**connect_kwargs(db_url), autocommit=True) as conn:
        ensure_login(conn, name, WRITER_ROLE, password)
    try:
        yield make_url(db_url).set(username=name, password=password).render_as_string(hide_password=False)
    finally:
        admin_sql(pg_url_base, f"DROP ROLE IF EXISTS {name}")


def child_env(tmp: Path, **extra: str) -> dict[str, str]:
    """An environment for ``glacial-lakes`` / ``prefect`` children: no Prefect or project setting
    of this machine leaks in (HOME, profiles, API URL all under ``tmp``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "GLACIAL_LAKES_", "DATABASE_URL"))}
    env |= {
        "HOME": str(tmp / "user"),
        "PYTHONPATH": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "GLACIAL_LAKES_HOME": str(tmp / "home"),
        "PREFECT_HOME": str(tmp / "prefect"),
        "PREFECT_PROFILES_PATH": str(tmp / "user" / "no-profiles.toml"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    (tmp / "user").mkdir(parents=True, exist_ok=True)
    return env | extra
