"""Fixtures of the fault tests that run the update flow on the demo world."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.synthetic import DemoCatalog, generate_demo_catalog


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    """The untouched 256 px demo catalog the faults are made from."""
    return generate_demo_catalog(tmp_path_factory.mktemp("pristine"), size_px=256, seed=0)


@pytest.fixture
def flow_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_backend: None) -> Iterator[pytest.MonkeyPatch]:
    """A private home for the run (Prefect, data); the monkeypatch, to point ``DATABASE_URL``."""
    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path / "home"))
    yield monkeypatch
