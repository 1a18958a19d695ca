"""Acceptance: a run where one of three scenes is corrupt, seen from every side.

One S2 band file of the middle date is a truncated download (the header and half its tile).
Two scenes land; the corrupt one is quarantined with a reason naming the file and GDAL's cause;
the flow run ends Failed, named Partial (never Completed); the ledger's ``ingest_run`` row of
that flow run says ``partial`` with the failure; ``glacial-lakes runs`` names the scene and why;
the report's artifacts, read back from the Prefect API, carry the counts, the lake changes,
timings, cloud fractions, the model and a quick-look PNG. The same run plants secrets (the
database password in its URL, an S3 secret key in the environment) and none of them appears in
the flow run's parameters, its logs, its artifacts or the ledger.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import matplotlib.image
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from db.engine import make_engine
from demo.synthetic import generate_demo_catalog
from flows.aoi import load_aoi
from flows.report import RunReport
from tests.helpers.database import fresh_database
from tests.helpers.reports import write_report

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]

S3_SECRET = "s3-SENTINEL-secret-7f3a9c"
"""Planted as GLACIAL_LAKES_S3_SECRET_ACCESS_KEY; must appear nowhere the run writes."""
WINDOW = (date(2024, 7, 1), date(2024, 8, 20))
"""Three S2 dates of the demo catalog (07-04, 07-24, 08-18), each with an S1 partner."""


@dataclass(frozen=True)
class CorruptRun:
    state: object
    report: RunReport
    url: str
    corrupt_file: Path
    corrupt_product: str
    flow_run_id: str


@pytest.fixture(scope="module")
def corrupt_run(
    tmp_path_factory: pytest.TempPathFactory, pg_url_base: str, template_db: str, prefect_backend: None
) -> Iterator[CorruptRun]:
    from flows.outcomes import report_of
    from flows.update_inventory import update_inventory

    root = tmp_path_factory.mktemp("corrupt")
    catalog = generate_demo_catalog(root / "catalog", size_px=256, seed=0)
    (band,) = sorted((root / "catalog" / "sentinel-2-l2a").glob("*_20240724T*/*_B04_10m.tif"))
    data = band.read_bytes()
    band.write_bytes(data[: len(data) // 2])  # a truncated download: the header, half the tile
    with fresh_database(pg_url_base, template_db) as url, pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", url)
        mp.setenv("GLACIAL_LAKES_HOME", str(root / "home"))
        mp.setenv("GLACIAL_LAKES_S3_ACCESS_KEY_ID", "AKIA-SENTINEL-ID")
        mp.setenv("GLACIAL_LAKES_S3_SECRET_ACCESS_KEY", S3_SECRET)
        state = update_inventory(
            aoi=load_aoi(catalog.aoi_path),
            start=WINDOW[0],
            end=WINDOW[1],
            source=f"local:{catalog.root}",
            model="baseline",
            return_state=True,
        )
        report = report_of(state)
        yield CorruptRun(
            state=state,
            report=report,
            url=url,
            corrupt_file=band,
            corrupt_product=band.parent.name,
            flow_run_id=str(state.state_details.flow_run_id),  # type: ignore[attr-defined]
        )


def test_two_land_the_corrupt_one_is_quarantined_and_the_run_is_not_completed(corrupt_run: CorruptRun) -> None:
    report, state = corrupt_run.report, corrupt_run.state
    assert report.found == 3 and report.skipped == 0, report.markdown()
    assert report.processed == 2 and report.failed == 1 and report.quarantined == 1, report.markdown()
    (bad,) = [o for o in report.outcomes if o.status == "failed"]
    assert bad.product_id == corrupt_run.corrupt_product
    # The input and the cause, not "WarpOperationError: Chunk and warp failed".
    assert bad.reason is not None and str(corrupt_run.corrupt_file) in bad.reason, bad.reason
    assert re.search(r"IReadBlock failed|TIFFRead|ZLib|ZIPDecode", bad.reason), bad.reason
    assert bad.reason.startswith("RasterInputError: ") and bad.disposition == "quarantine"
    assert not state.is_completed() and state.is_failed(), state  # type: ignore[attr-defined]
    assert state.name == "Partial", state  # type: ignore[attr-defined]
    assert corrupt_run.corrupt_product in (state.message or "")  # type: ignore[attr-defined]


def test_the_ledger_has_the_run_and_the_quarantined_acquisition(corrupt_run: CorruptRun) -> None:
    engine = make_engine(corrupt_run.url)
    try:
        with engine.connect() as conn:
            runs = conn.execute(sa.text("SELECT flow_run_id, status, counts, failures FROM inventory.ingest_run")).all()
            acq = conn.execute(
                sa.text("SELECT status, error FROM inventory.acquisition WHERE product_id = :p"),
                {"p": corrupt_run.corrupt_product},
            ).one()
    finally:
        engine.dispose()
    assert [(r.flow_run_id, r.status) for r in runs] == [(corrupt_run.flow_run_id, "partial")]
    assert runs[0].counts["processed"] == 2 and runs[0].counts["quarantined"] == 1
    (failure,) = runs[0].failures
    assert failure["acquisition"] == corrupt_run.corrupt_product and failure["disposition"] == "quarantine"
    assert acq.status == "quarantined" and corrupt_run.corrupt_file.name in acq.error


def test_glacial_lakes_runs_names_the_corrupt_scene_and_why(
    corrupt_run: CorruptRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.cli import main

    monkeypatch.setenv("DATABASE_URL", corrupt_run.url)
    result = CliRunner().invoke(main, ["runs"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "partial" in lines[0] and "processed 2" in lines[0] and "failed 1 (quarantined 1)" in lines[0], lines
    assert "2024-07-01..2024-08-20" in lines[0]
    assert corrupt_run.corrupt_product in lines[1] and "[quarantine]" in lines[1], lines
    assert corrupt_run.corrupt_file.name in lines[1] and re.search(r"IReadBlock|TIFFRead|ZLib", lines[1]), lines
    as_json = json.loads(CliRunner().invoke(main, ["runs", "--json", "--limit", "1"]).output)
    assert as_json[0]["flow_run_id"] == corrupt_run.flow_run_id and as_json[0]["status"] == "partial"


def _artifacts(flow_run_id: str) -> dict[str, object]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {a.key: a for a in client.read_artifacts() if str(a.flow_run_id) == flow_run_id and a.key}


def test_the_report_is_read_back_from_the_prefect_api(corrupt_run: CorruptRun) -> None:
    artifacts = _artifacts(corrupt_run.flow_run_id)
    slug = "demo-tienshan"
    assert set(artifacts) == {
        f"inventory-update-{slug}",
        f"scene-outcomes-{slug}",
        f"lake-changes-{slug}",
        f"quick-look-{slug}",
    }, sorted(artifacts)
    summary = str(artifacts[f"inventory-update-{slug}"].data)  # type: ignore[attr-defined]
    assert "found 3, processed 2, skipped 0, failed 1 (quarantined 1)" in summary
    assert corrupt_run.corrupt_product in summary and "failed (quarantined)" in summary
    assert "Model: `" in summary and corrupt_run.report.model in summary
    for stage in ("search", "pair", "stack", "segment", "extract", "merge"):
        assert f"{stage} " in summary.split("Timings (s): ")[1].splitlines()[0], summary
    assert re.search(r"Lakes: new [1-9]\d*, grown \d+, shrunk \d+, disappeared \d+", summary), summary

    scenes = json.loads(artifacts[f"scene-outcomes-{slug}"].data)  # type: ignore[attr-defined]
    landed = [r for r in scenes if r["outcome"] == "processed"]
    assert len(landed) == 2 and all(isinstance(r["cloud_fraction"], float) for r in landed), scenes
    assert all(r["segment_s"] >= 0 and r["merge_s"] > 0 for r in landed), scenes
    (bad,) = [r for r in scenes if r["outcome"] == "failed (quarantined)"]
    assert corrupt_run.corrupt_file.name in bad["reason"]

    changes = json.loads(artifacts[f"lake-changes-{slug}"].data)  # type: ignore[attr-defined]
    kinds = {r["change"] for r in changes}
    assert "new" in kinds and kinds <= {
        "new",
        "grown",
        "shrunk",
        "reshaped",
        "split",
        "merged",
        "disappeared",
        "reappeared",
    }, kinds
    assert len(changes) == sum(corrupt_run.report.change_counts().values())

    quick = str(artifacts[f"quick-look-{slug}"].data)  # type: ignore[attr-defined]
    (encoded,) = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", quick)
    png = base64.b64decode(encoded)
    write_report(
        "outcomes",
        {
            "corrupt_run_timings_s": {k: round(v, 2) for k, v in corrupt_run.report.timings.items()},
            "quick_look_png_bytes": len(png),
            "lake_changes": corrupt_run.report.change_counts(),
            "quarantined_reason": corrupt_run.report.failures()[0]["error"],
        },
    )
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 300
    # Coloured by change: the "new" blue (#1f77b4) is drawn.
    rgb = (pixels[..., :3] * 255).round()
    assert ((abs(rgb[..., 0] - 0x1F) < 3) & (abs(rgb[..., 1] - 0x77) < 3) & (abs(rgb[..., 2] - 0xB4) < 3)).any()


def _everything_the_api_holds() -> list[str]:
    """Every flow run's parameters and state message, every log line, every artifact, as text."""
    from prefect.client.orchestration import get_client

    texts: list[str] = []
    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs():
            texts.append(json.dumps(run.model_dump(mode="json"), default=str))
        for task_run in client.read_task_runs():
            texts.append(json.dumps(task_run.model_dump(mode="json"), default=str))
        texts += [log.message for log in client.read_logs()]
        texts += [json.dumps(a.model_dump(mode="json"), default=str) for a in client.read_artifacts()]
    return texts


def test_no_secret_reaches_the_prefect_api_or_the_ledger(corrupt_run: CorruptRun) -> None:
    password = sa.engine.make_url(corrupt_run.url).password
    assert password, "the test database URL carries a password"
    secrets = [str(password), S3_SECRET]
    texts = _everything_the_api_holds()
    assert len(texts) > 10 and any(corrupt_run.flow_run_id in t for t in texts), "the search saw this run"
    engine = make_engine(corrupt_run.url)
    try:
        with engine.connect() as conn:
            texts += [str(tuple(r)) for r in conn.execute(sa.text("SELECT * FROM inventory.ingest_run"))]
            texts += [
                str(tuple(r))
                for r in conn.execute(sa.text("SELECT error, href, properties FROM inventory.acquisition"))
            ]
    finally:
        engine.dispose()
    leaks = [(s[:6], t[:200]) for t in texts for s in secrets if s in t]
    assert leaks == []


# Last in this file: these run the same AOI again, so the ledger's newest run is no longer the corrupt one.


def _again(corrupt_run: CorruptRun, **kw: object) -> RunReport:
    from flows.outcomes import report_of
    from flows.update_inventory import update_inventory

    catalog_root = corrupt_run.corrupt_file.parents[2]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", corrupt_run.url)
        mp.setenv("GLACIAL_LAKES_HOME", str(catalog_root.parent / "home"))
        state = update_inventory(
            aoi=load_aoi(catalog_root / "aoi.geojson"),
            start=WINDOW[0],
            end=WINDOW[1],
            source=f"local:{catalog_root}",
            model="baseline",
            return_state=True,
            **kw,
        )
    return report_of(state)


def test_a_quarantined_input_is_skipped_until_it_is_replaced(
    corrupt_run: CorruptRun, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Unchanged: the next run does not read the bad file again; it says why, and nothing fails.
    again = _again(corrupt_run)
    by_id = {o.product_id: o for o in again.outcomes}
    assert again.failed == 0 and again.processed == 0, again.markdown()
    quarantined = by_id[corrupt_run.corrupt_product]
    assert quarantined.status == "skipped" and quarantined.reason is not None
    assert quarantined.reason.startswith("quarantined, input unchanged") and corrupt_run.corrupt_file.name in (
        quarantined.reason
    )
    assert sum(o.reason == "already processed" for o in again.outcomes) == 2

    # Replaced by a good copy (the generator is deterministic): a new fingerprint, tried and landed.
    fresh = generate_demo_catalog(tmp_path_factory.mktemp("fresh") / "catalog", size_px=256, seed=0)
    good = fresh.root / corrupt_run.corrupt_file.relative_to(corrupt_run.corrupt_file.parents[2])
    corrupt_run.corrupt_file.write_bytes(good.read_bytes())
    fixed = _again(corrupt_run)
    landed = {o.product_id for o in fixed.outcomes if o.status == "processed"}
    assert landed == {corrupt_run.corrupt_product} and fixed.failed == 0, fixed.markdown()
    engine = make_engine(corrupt_run.url)
    try:
        with engine.connect() as conn:
            status, props = conn.execute(
                sa.text("SELECT status, properties FROM inventory.acquisition WHERE product_id = :p"),
                {"p": corrupt_run.corrupt_product},
            ).one()
    finally:
        engine.dispose()
    assert status == "processed" and "quarantined_keys" not in props


def test_one_scene_of_the_window_alone(corrupt_run: CorruptRun) -> None:
    """``scenes``: only the named S2 product is this run's; an unknown id is reported, not dropped."""
    report = _again(corrupt_run, scenes=[corrupt_run.corrupt_product, "S2X_NOT_IN_THE_WINDOW"], rerun=True)
    ids = {o.product_id: o for o in report.outcomes}
    assert set(ids) == {corrupt_run.corrupt_product, "S2X_NOT_IN_THE_WINDOW"}, report.markdown()
    assert ids["S2X_NOT_IN_THE_WINDOW"].reason == "asked for, not found in the window"
    assert ids[corrupt_run.corrupt_product].status == "processed"


def test_rerun_of_one_scene_by_its_id(corrupt_run: CorruptRun, monkeypatch: pytest.MonkeyPatch) -> None:
    """``glacial-lakes rerun --scene ID``: the AOI and day come from the ledger; only that scene runs."""
    from flows.cli import main

    catalog_root = corrupt_run.corrupt_file.parents[2]
    monkeypatch.setenv("DATABASE_URL", corrupt_run.url)
    monkeypatch.setenv("GLACIAL_LAKES_HOME", str(catalog_root.parent / "home"))
    args = ["rerun", "--scene", corrupt_run.corrupt_product, "--source", f"local:{catalog_root}", "--model", "baseline"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert corrupt_run.corrupt_product in result.output and "processed 1" in result.output, result.output
    unknown = CliRunner().invoke(main, ["rerun", "--scene", "S2X_UNKNOWN", "--source", f"local:{catalog_root}"])
    assert unknown.exit_code == 2 and "S2X_UNKNOWN" in unknown.output, unknown.output
