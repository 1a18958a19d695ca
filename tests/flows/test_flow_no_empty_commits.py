"""The update flow never commits a scene it could not see, nor mixes parameter sets, nor hangs.

D1 (reliability §5): a DEM with a wrong CRS reprojects to all-NaN; every scene fails naming the
file and none is committed (figure: scenes committed with 0 valid px = 0). After the file is fixed
the rerun processes them, and the inventory equals a clean run's (content digest, figure: equal).
Item 3: a changed threshold is refused before any scene is computed, the inventory untouched.
Item 4: a silent STAC API fails the run within a minute (figure: seconds).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import rasterio
from rasterio.crs import CRS
from sqlalchemy import Engine, text

from db.engine import make_engine
from demo.synthetic import DemoCatalog, generate_demo_catalog
from flows.aoi import load_aoi
from tasks.sources import LocalStacSource
from tests.helpers.database import fresh_database
from tests.helpers.digests import content
from tests.helpers.servers import silent_server

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]


@pytest.fixture
def catalog(tmp_path: Path) -> DemoCatalog:
    return generate_demo_catalog(tmp_path / "catalog", size_px=256, seed=0)


def _window(catalog: DemoCatalog) -> dict[str, object]:
    return {
        "aoi": load_aoi(catalog.aoi_path),
        "start": min(catalog.dates) - timedelta(days=1),
        "end": max(catalog.dates) + timedelta(days=1),
        "source": f"local:{catalog.root}",
        "model": "baseline",
    }


def _scenes(engine: Engine) -> tuple[int, int]:
    """(scenes committed, scenes committed with no valid pixel)."""
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT count(*), count(*) FILTER (WHERE coalesce(valid_fraction, 0) = 0) FROM inventory.scene")
        ).one()
    return int(row[0]), int(row[1])


def test_wrong_crs_dem_commits_nothing_and_the_fixed_file_is_processed(
    catalog: DemoCatalog,
    db_url: str,
    engine: Engine,
    pg_url_base: str,
    template_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefect_backend: None,
) -> None:
    from flows.outcomes import report_of
    from flows.update_inventory import update_inventory

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path / "home"))
    (dem,) = LocalStacSource(catalog.root).acquisitions(["DEM"])
    dem_path = Path(dem.asset("data"))
    pristine = tmp_path / "dem-pristine.tif"
    shutil.copy2(dem_path, pristine)
    with rasterio.open(dem_path, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        ds.crs = CRS.from_epsg(32601)  # UTM zone 1: the same numbers land in the Pacific

    # A run with failed scenes ends Failed (its report is the state's result).
    state = update_inventory(**_window(catalog), return_state=True)
    assert state.is_failed(), state
    broken = report_of(state)
    paired = broken.failed
    assert paired == len(catalog.dates) - 1 and broken.processed == 0, broken.markdown()
    for o in broken.outcomes:
        if o.status == "failed":
            assert o.reason and "RasterInputError" in o.reason and dem_path.name in o.reason, o.reason
            assert "no valid pixel" in o.reason
    committed, empty = _scenes(engine)
    print(f"D1: scenes committed with a wrong-CRS DEM: {committed} (with 0 valid px: {empty})")
    assert (committed, empty) == (0, 0)

    shutil.copy(pristine, dem_path)  # the fix: a new modification time, the right CRS
    fixed = update_inventory(**_window(catalog))
    assert fixed.failed == 0 and fixed.processed == paired, fixed.markdown()
    assert _scenes(engine) == (paired, 0)

    with fresh_database(pg_url_base, template_db) as clean_url:
        monkeypatch.setenv("DATABASE_URL", clean_url)
        clean = update_inventory(**_window(catalog))
        assert clean.processed == paired
        clean_engine = make_engine(clean_url)
        try:
            equal = content(engine, None) == content(clean_engine, None)
        finally:
            clean_engine.dispose()
    print(f"D1: inventory after the fix equals a clean run: {equal}")
    assert equal


def test_a_changed_threshold_is_refused_and_writes_nothing(
    catalog: DemoCatalog,
    db_url: str,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefect_backend: None,
) -> None:
    from flows.outcomes import report_of
    from flows.update_inventory import update_inventory

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path / "home"))
    first = update_inventory(**_window(catalog))
    assert first.failed == 0 and first.processed > 0
    before = content(engine, None)

    monkeypatch.setenv("GLACIAL_LAKES_THRESHOLD", "0.9")
    t0 = time.perf_counter()
    changed = report_of(update_inventory(**_window(catalog), return_state=True))
    seconds = time.perf_counter() - t0
    assert changed.processed == 0 and changed.failed == first.processed, changed.markdown()
    for o in changed.outcomes:
        if o.status == "failed":
            assert o.reason and o.reason.startswith("ParameterMismatchError: parameters "), o.reason
            assert "threshold 0.5 → 0.9" in o.reason, o.reason
    assert content(engine, None) == before
    print(f"params mismatch: {changed.failed} scenes refused in {seconds:.1f} s, inventory unchanged")


@pytest.fixture
def silent_stac() -> Iterator[str]:
    """A STAC API that accepts connections and never answers (trailing slash: a catalog root URL)."""
    with silent_server() as url:
        yield f"{url}/"


def test_a_silent_stac_api_fails_the_run_within_a_minute(
    catalog: DemoCatalog,
    db_url: str,
    silent_stac: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefect_backend: None,
) -> None:
    from flows.update_inventory import update_inventory

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(tmp_path / "home"))
    window = {**_window(catalog), "source": f"stac:{silent_stac}"}
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError, match="no answer within"):
        update_inventory(**window)
    seconds = time.perf_counter() - t0
    print(f"silent STAC API: the run failed in {seconds:.1f} s")
    assert seconds <= 60, f"{seconds:.1f} s"
