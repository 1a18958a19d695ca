"""``glacial-lakes run --source stac:URL`` as a user runs it, for each public catalog's layout.

The demo catalog is served by a loopback STAC API (``tests.helpers.stac_api``) in Earth Search
v1, Planetary Computer (signed hrefs) and Copernicus Data Space (``s3://`` hrefs, credentials from
settings) spelling; the run must fill the inventory with recall and precision ≥ 0.9 against the
generator's truth, and the S3 secret must appear in no log, flow parameter or artifact.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from demo.synthetic import DemoCatalog, generate_demo_catalog, load_truth
from tests.helpers import stac_api
from tests.helpers.stac_api import S3_KEY_ID, S3_SECRET, LoopbackStac, loopback_stac

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return generate_demo_catalog(tmp_path_factory.mktemp("catalog"), size_px=256, seed=0)


@pytest.fixture(scope="module")
def server(catalog: DemoCatalog) -> Iterator[LoopbackStac]:
    from tests.helpers import realdata

    with loopback_stac(catalog.root, realdata.require()) as srv:
        yield srv


def _prefect_records() -> str:
    """Every flow run (parameters included), log and artifact the Prefect API holds, as text."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        parts = [r.model_dump_json() for r in client.read_flow_runs()]
        parts += [r.model_dump_json() for r in client.read_logs()]
        parts += [a.model_dump_json() for a in client.read_artifacts()]
    return "\n".join(parts)


@pytest.mark.parametrize("layout", stac_api.LAYOUTS)
def test_run_from_a_stac_api_fills_the_inventory(
    layout: str,
    catalog: DemoCatalog,
    server: LoopbackStac,
    db_url: str,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    prefect_backend: None,
) -> None:
    from db.ledger import present_observations, scene_table
    from demo.score import score_frames
    from flows.aoi import load_aoi
    from flows.cli import main
    from tasks.defaults import MIN_LAKE_AREA_M2
    from tasks.grid import utm_epsg_for

    env = {
        "DATABASE_URL": db_url,
        "GLACIAL_LAKES_HOME": str(tmp_path / "home"),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "prefect" / "storage"),
        "GLACIAL_LAKES_STAC_CATALOG": layout,
        "GLACIAL_LAKES_PC_TOKEN_URL": server.token_url,
    }
    if layout == "cdse":
        env |= {
            "GLACIAL_LAKES_ALLOW_S3": "true",
            "GLACIAL_LAKES_S3_ACCESS_KEY_ID": S3_KEY_ID,
            "GLACIAL_LAKES_S3_SECRET_ACCESS_KEY": S3_SECRET,
            "GLACIAL_LAKES_S3_ENDPOINT": server.base.removeprefix("http://"),
            "GLACIAL_LAKES_S3_VIRTUAL_HOSTING": "false",
            "GLACIAL_LAKES_S3_HTTPS": "false",
        }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    server.seen = stac_api.Seen()
    server.faults = stac_api.Faults(search_429=1)  # the first search is told to come back later
    caplog.set_level(logging.DEBUG)
    start, end = min(catalog.dates) - timedelta(days=1), max(catalog.dates) + timedelta(days=1)
    args = ["run", "--aoi", str(catalog.aoi_path), "--start", f"{start}", "--end", f"{end}"]
    result = CliRunner().invoke(main, [*args, "--source", f"stac:{server.url(layout)}", "--model", "baseline"])
    assert result.exit_code == 0, result.output

    aoi = load_aoi(catalog.aoi_path)
    scenes = scene_table(engine, aoi.name)
    assert len(scenes) == len(catalog.dates) - 1, result.output  # one S2 date has no S1 within 7 days
    mapped = present_observations(engine, aoi.name)
    days = [s["sensing_time"].date() for s in scenes]  # type: ignore[attr-defined]
    epsg = utm_epsg_for(aoi.shape.centroid.x, aoi.shape.centroid.y)
    agreement = score_frames(load_truth(catalog.truth_path), mapped, days, epsg, MIN_LAKE_AREA_M2)
    print(f"{layout}: recall {agreement.recall:.3f}, precision {agreement.precision:.3f}")
    assert agreement.recall >= 0.9 and agreement.precision >= 0.9, agreement

    assert server.seen.paths(f"/{layout}/search", 429), "the 429 was met and waited out"
    if layout == "planetary-computer":
        assert server.seen.tokens and not server.seen.paths("/files/signed/", 403)
    if layout == "cdse":
        assert server.seen.paths("/eodata/", 206) and not server.seen.paths("/eodata/", 403)
        assert S3_SECRET not in result.output and S3_SECRET not in caplog.text
        records = _prefect_records()
        assert S3_KEY_ID not in records and S3_SECRET not in records
