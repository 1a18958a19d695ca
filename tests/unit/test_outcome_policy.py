"""The outcome policy table, the reason of a failed read, the final state, progress and the quick look."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import geopandas as gpd
import matplotlib.image
import numpy as np
import pytest
import rasterio
from prefect.states import Failed
from rasterio.transform import from_origin
from shapely.geometry import box
from sqlalchemy.exc import OperationalError

from core.errors import RasterInputError, SourceError
from core.progress import report_progress
from db.ledger import ParameterMismatchError
from db.records import MergeReport
from flows.outcomes import Disposition, classify, describe, final_state, report_of, retry_condition, run_status
from flows.progress import Progress, terminal_progress
from flows.quicklook import COLOURS, quicklook_png
from flows.report import RunReport, SceneOutcome
from tasks.grid import GridSpec
from tasks.preprocess import _warp
from tasks.read_errors import RemoteReadError, gdal_reason
from tasks.sources import TransientSourceError


@pytest.mark.parametrize(
    ("error", "disposition"),
    [
        (TransientSourceError("stac:x: 503"), Disposition.RETRY),
        (RemoteReadError("https://x/B04.tif: remote read failed (timeout)"), Disposition.RETRY),
        (OperationalError("SELECT 1", {}, Exception("server closed the connection")), Disposition.RETRY),
        (ParameterMismatchError("parameters a differ from b"), Disposition.FAIL),
        (RasterInputError("x.tif: unreadable raster"), Disposition.QUARANTINE),
        (SourceError("stac:x: bad item"), Disposition.QUARANTINE),
        (TimeoutError("stac:x: no answer within 20 s"), Disposition.FAIL),
        (KeyError("a bug"), Disposition.FAIL),
    ],
)
def test_the_table_decides_each_class_of_error(error: Exception, disposition: Disposition) -> None:
    assert classify(error) is disposition
    assert retry_condition(None, None, Failed(data=error)) is (disposition is Disposition.RETRY)


def _truncated_tif(tmp_path: Path) -> Path:
    path = tmp_path / "T43TGH_B04_10m.tif"
    profile = {
        "driver": "GTiff",
        "dtype": "uint16",
        "width": 64,
        "height": 64,
        "count": 1,
        "compress": "deflate",
        "crs": "EPSG:32643",
        "transform": from_origin(668_100, 4_769_760, 10, 10),
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.random.default_rng(0).integers(1, 10_000, (1, 64, 64), dtype=np.uint16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a truncated download
    return path


def test_a_corrupt_file_is_named_with_gdals_cause(tmp_path: Path) -> None:
    path = _truncated_tif(tmp_path)
    grid = GridSpec(epsg=32643, transform=tuple(from_origin(668_100, 4_769_760, 10, 10))[:6], width=64, height=64)
    with pytest.raises(RasterInputError) as err:
        _warp(str(path), grid)
    reason = describe(err.value)
    assert reason.startswith(f"RasterInputError: {path}: unreadable raster (Chunk and warp failed; ")
    assert "IReadBlock failed" in reason or "TIFFRead" in reason, reason  # GDAL's cause, not only the warp's
    assert classify(err.value) is Disposition.QUARANTINE


def test_gdal_reason_walks_the_chain_once_per_message() -> None:
    try:
        try:
            raise OSError("x.tif, band 1: IReadBlock failed")
        except OSError as inner:
            raise RuntimeError("Chunk and warp failed") from inner
    except RuntimeError as outer:
        assert gdal_reason(outer) == "Chunk and warp failed; x.tif, band 1: IReadBlock failed"


def _report(*outcomes: SceneOutcome) -> RunReport:
    return RunReport(aoi="a", model="m", found=len(outcomes), outcomes=outcomes)


def test_the_final_state_is_completed_only_when_every_scene_landed() -> None:
    landed = SceneOutcome("S2_1", "processed", merge=MergeReport("k1", noop=False))
    skipped = SceneOutcome("S2_2", "skipped", "no S1 within 7 days")
    bad = SceneOutcome("S2_3", "failed", "RasterInputError: x.tif: unreadable", disposition="quarantine")
    ok = final_state(_report(landed, skipped))
    assert ok.is_completed() and run_status(_report(landed, skipped)) == "committed"
    partial = final_state(_report(landed, bad))
    assert partial.is_failed() and partial.name == "Partial" and "S2_3" in (partial.message or "")
    assert run_status(_report(landed, bad)) == "partial"
    none = final_state(_report(bad))
    assert none.is_failed() and none.name == "Failed" and run_status(_report(bad)) == "failed"
    assert report_of(partial).quarantined == 1  # the report is the Failed state's result too


def test_progress_is_quiet_off_a_terminal_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    quiet = io.StringIO()
    monkeypatch.delenv("GLACIAL_LAKES_PROGRESS", raising=False)
    bar = Progress("scenes", 2, quiet)
    bar.advance("S2_1")
    assert quiet.getvalue() == ""
    monkeypatch.setenv("GLACIAL_LAKES_PROGRESS", "always")
    shown = io.StringIO()
    bar = Progress("scenes", 2, shown)
    bar.advance("S2_1")
    bar.advance("S2_2")
    assert shown.getvalue().splitlines() == [
        "scenes [........................] 0/2",
        "scenes [############............] 1/2 S2_1",
        "scenes [########################] 2/2 S2_2",
    ]


def test_reported_stages_are_drawn_only_while_the_cli_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLACIAL_LAKES_PROGRESS", "always")
    shown = io.StringIO()
    report_progress("scenes", 1, 2, "before")  # nobody listens: nothing, and no error
    with terminal_progress(shown):
        report_progress("search sentinel-2-l2a", 1, None, "pages")
        report_progress("search sentinel-2-l2a", 2, None, "pages")
        report_progress("scenes", 1, 2, "S2_1 processed")
    report_progress("scenes", 2, 2, "after")
    assert shown.getvalue().splitlines() == [
        "search sentinel-2-l2a 1 pages",
        "search sentinel-2-l2a 2 pages",
        "scenes [........................] 0/2",
        "scenes [############............] 1/2 S2_1 processed",
    ]
    monkeypatch.setenv("GLACIAL_LAKES_PROGRESS", "never")
    silent = io.StringIO()
    with terminal_progress(silent):
        report_progress("scenes", 1, 2, "S2_1")
    assert silent.getvalue() == ""


def test_the_quick_look_colours_lakes_by_change() -> None:
    aoi = box(77.0, 43.0, 77.02, 43.02)
    lakes = gpd.GeoDataFrame(
        {"change_kind": ["new", "disappeared"]},
        geometry=[box(77.005, 43.005, 77.01, 43.01), box(77.012, 43.012, 77.016, 43.016)],
        crs=4326,
    )
    png = quicklook_png(aoi, lakes, 32643, "test")
    rgb = (matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3] * 255).round()
    for kind in ("new", "disappeared"):
        r, g, b = (int(COLOURS[kind][i : i + 2], 16) for i in (1, 3, 5))
        assert ((abs(rgb[..., 0] - r) < 3) & (abs(rgb[..., 1] - g) < 3) & (abs(rgb[..., 2] - b) < 3)).sum() > 50, kind
    r, g, b = (int(COLOURS["grown"][i : i + 2], 16) for i in (1, 3, 5))
    assert not ((abs(rgb[..., 0] - r) < 3) & (abs(rgb[..., 1] - g) < 3) & (abs(rgb[..., 2] - b) < 3)).any()


def test_the_tasks_retry_by_the_policy_with_exponential_back_off_and_jitter() -> None:
    from flows.tasks import merge_task, prepare_stack_task, search_task

    for task in (search_task, prepare_stack_task, merge_task):
        assert task.retry_condition_fn is retry_condition, task.name
        assert task.retry_jitter_factor is not None and task.retry_jitter_factor > 0, task.name
        delays = list(task.retry_delay_seconds)  # type: ignore[arg-type]
        assert len(delays) == task.retries >= 2, task.name
        assert all(b == 2 * a for a, b in itertools.pairwise(delays)), (task.name, delays)


def test_an_error_raised_while_a_signal_unwinds_is_an_interruption_not_a_scene_failure() -> None:
    from core.errors import interrupted

    try:
        try:
            raise SystemExit(143)  # what SIGTERM becomes
        except SystemExit:
            raise ValueError("Task run is not set") from None  # a library's error while handling it
    except ValueError as exc:
        chained = exc
    assert chained.__context__ is not None and interrupted(chained)
    assert not interrupted(RasterInputError("x.tif: unreadable"))
