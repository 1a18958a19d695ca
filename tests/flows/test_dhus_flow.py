"""``glacial-lakes run --source dhus:URL`` against the STAC path on the same scenes.

The demo scenes are written as SAFE products (:func:`tests.helpers.safe_products.safe_products_for_demo`,
real SAFE metadata, synthetic rasters) and served as product zips by the loopback DHuS hub
(:mod:`tests.helpers.dhus_server`: answers derived from the recorded ones, ids, footprints and
dates of the demo scenes); the real sentinelsat client searches it, the products are downloaded
into the data root and read by the SAFE readers. The same scenes read as COGs from the demo's
static catalog (``local:DIR``) give the STAC path's lakes. The hub's faults are on during the run:
the first search meets a 503 maintenance page (retried), one S2 download is cut half-way
(resumed) and one S2 product states a wrong checksum (quarantined; the rest of the run lands).
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from tests.helpers.dhus_server import PASSWORD, USER, LoopbackDhus, ServedProduct, loopback_dhus

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]

PIXEL_M2 = 100.0
"""One 10 m pixel, m²: the area tolerance between the two paths."""


@pytest.fixture(scope="module")
def products(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers import realdata
    from tests.helpers.safe_products import safe_products_for_demo

    realdata.require("s2_safe_metadata")
    root = tmp_path_factory.mktemp("safe")
    safe_products_for_demo(root, size_px=256)
    return root


@pytest.fixture(scope="module")
def served(products: Path) -> list[ServedProduct]:
    """Every SAFE product as a DHuS hub serves it: a zip, with what its reader says of it."""
    import io
    import zipfile

    from tasks.safe_source import SafeSource
    from tasks.sources import LocalStacSource

    out = []
    for acq in SafeSource(products, LocalStacSource(products / "dem")).products():
        path = products / f"{acq.product_id}.zip"
        if path.is_file():
            data = path.read_bytes()
        else:
            folder, buf = products / f"{acq.product_id}.SAFE", io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
                for f in sorted(folder.rglob("*")):
                    if f.is_file():
                        zf.write(f, f"{folder.name}/{f.relative_to(folder)}")
            data = buf.getvalue()
        uid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, acq.product_id))
        out.append(ServedProduct(uid, acq.product_id, acq.kind, acq.sensing_time, acq.footprint, data, acq.cloud_cover))
    return out


@pytest.fixture
def hub(served: list[ServedProduct]) -> Iterator[LoopbackDhus]:
    from tests.helpers import realdata

    with loopback_dhus(realdata.require(), served) as state:
        yield state


def _prefect_records() -> str:
    """Every flow run (parameters included), log and artifact the Prefect API holds, as text."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        parts = [r.model_dump_json() for r in client.read_flow_runs()]
        parts += [r.model_dump_json() for r in client.read_logs()]
        parts += [a.model_dump_json() for a in client.read_artifacts()]
    return "\n".join(parts)


def _run(source: str, db_url: str, home: Path, products: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    from flows.cli import main

    env = {
        "DATABASE_URL": db_url,
        "GLACIAL_LAKES_HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "prefect" / "storage"),
        "GLACIAL_LAKES_DHUS_USER": USER,
        "GLACIAL_LAKES_DHUS_PASSWORD": PASSWORD,
        "GLACIAL_LAKES_DHUS_DEM_SOURCE": f"local:{products / 'dem'}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = ["run", "--aoi", str(products / "dem" / "aoi.geojson"), "--start", "2024-06-01", "--end", "2024-10-01"]
    result = CliRunner().invoke(main, [*args, "--source", source, "--model", "baseline"])
    return result.exit_code, result.output


def test_run_from_a_dhus_hub_maps_the_lakes_of_the_stac_path(
    products: Path,
    hub: LoopbackDhus,
    db_url: str,
    engine: Engine,
    pg_url_base: str,
    template_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefect_backend: None,
) -> None:
    from db.engine import make_engine
    from db.ledger import present_observations, scene_table
    from flows.aoi import load_aoi
    from tasks.grid import utm_epsg_for
    from tests.helpers.database import fresh_database

    aoi = load_aoi(products / "dem" / "aoi.geojson")
    s2 = sorted((p for p in hub.products.values() if p.kind == "S2L2A"), key=lambda p: p.sensing)
    corrupt, cut = s2[0], s2[1]
    hub.faults.maintenance = 1
    hub.faults.cut.add(cut.uuid)
    hub.faults.bad_checksum.add(corrupt.uuid)
    home = tmp_path / "dhus-home"
    kept = home / "data" / "already-here.txt"
    kept.parent.mkdir(parents=True)
    kept.write_text("kept")

    code, output = _run(f"dhus:{hub.url}", db_url, home, products, monkeypatch)
    assert code == 1, output  # one scene quarantined: the run is partial, the rest landed
    assert "quarantined 1" in output and "CorruptDownloadError" in output, output
    assert corrupt.title in output
    assert PASSWORD not in output and PASSWORD not in _prefect_records()  # no parameter, log or artifact
    statuses = [s for *_, s in hub.seen.requests]
    assert statuses[0] == 503  # the maintenance page, retried
    ranges = hub.seen.downloads(cut.uuid)
    assert ranges[0] == ("", 200) and ranges[1][0].startswith("bytes=") and ranges[1][1] == 206, ranges
    assert kept.read_text() == "kept"
    assert [p.name.split(".zip")[0] for p in (home / "data" / "quarantine").iterdir()] == [corrupt.title]

    with fresh_database(pg_url_base, template_db) as stac_url:
        code, output = _run(f"local:{products / 'dem'}", stac_url, tmp_path / "stac-home", products, monkeypatch)
        assert code == 0, output
        stac_engine = make_engine(stac_url)
        try:
            reference = present_observations(stac_engine, aoi.name)
            stac_scenes = scene_table(stac_engine, aoi.name)
        finally:
            stac_engine.dispose()

    dhus_scenes = scene_table(engine, aoi.name)
    assert {s["s2_product_id"] for s in dhus_scenes} == {s["s2_product_id"] for s in stac_scenes} - {corrupt.title}
    mapped = present_observations(engine, aoi.name)
    epsg = utm_epsg_for(aoi.shape.centroid.x, aoi.shape.centroid.y)
    reference = reference[reference["s2_product_id"] != corrupt.title].to_crs(epsg)
    mapped = mapped.to_crs(epsg)
    assert len(mapped) == len(reference) > 0
    worst = 0.0
    for pid, ours in mapped.groupby("s2_product_id"):
        theirs = reference[reference["s2_product_id"] == pid]
        assert len(ours) == len(theirs), pid
        for geom, area in zip(ours.geometry, ours["area_m2"], strict=True):
            match = theirs[theirs.geometry.intersects(geom)]
            assert len(match) == 1, (pid, area)
            worst = max(worst, abs(float(match["area_m2"].iloc[0]) - float(area)))
    print(f"dhus vs stac path: {len(mapped)} lake observations, largest area difference {worst:.1f} m²")
    assert worst <= PIXEL_M2
