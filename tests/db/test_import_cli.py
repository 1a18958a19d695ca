"""``glacial-lakes import-inventory`` end to end on the real ICIMOD Everest subset (42 lakes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text

from flows.cli import main

pytestmark = pytest.mark.db

SUBSET = ("icimod_glacial_lakes_2015", "GL_3basins_2015_everest_subset.geojson")
"""The real ICIMOD 2015 Khumbu subset, under the ``realdata`` fixture's folder."""


def test_import_then_reimport_then_as_of(db_url: str, engine: Engine, tmp_path: Path, realdata: Path) -> None:
    subset = realdata.joinpath(*SUBSET)
    env = {"DATABASE_URL": db_url, "GLACIAL_LAKES_HOME": str(tmp_path / "home")}
    runner = CliRunner()
    first = runner.invoke(main, ["import-inventory", str(subset), "--date", "2015-10-01", "--aoi", "everest"], env=env)
    assert first.exit_code == 0, first.output
    with engine.connect() as conn:
        lakes = conn.execute(text("SELECT count(*) FROM inventory.lake")).scalar_one()
    assert lakes == 42 and "42 lakes" in first.output

    again = runner.invoke(main, ["import-inventory", str(subset), "--date", "2015-10-01", "--aoi", "everest"], env=env)
    assert again.exit_code == 0 and "nothing changed" in again.output

    before = tmp_path / "before.geojson"
    out = runner.invoke(main, ["export", "--out", str(before), "--as-of", "2015-09-30", "--aoi", "everest"], env=env)
    assert out.exit_code == 0 and out.output.startswith("0 lakes")

    bad = runner.invoke(main, ["import-inventory", str(subset), "--date", "2015-31-10"], env=env)
    assert bad.exit_code == 2 and "--date" in bad.output
