"""I1 (reliability §5): the raster fault matrix. Every bad-input class of §3 yields its documented outcome.

One flow run carries ten scene fault classes at once (``tests.data.faults.make``): each fault is
in a clone scene of its own, the demo's own scenes stay untouched, and the run is compared with
a run over the same catalog whose clones are clean. For each class: (a) the faulty scene's
outcome is the documented one; (b) every other scene of the run is processed; (c) no lake the
clean run keeps is retired, and the faulty scene writes no absent row unless its class observes
legitimately (then exactly the clean clone's observations).

The classes that need another AOI or a server get their own run: HTTP 5xx mid-read (a loopback
STAC API answers 503 once, past the first bytes of one asset), a tiny scene (8 px AOI, the
shipped TerraMind model), a scene across a UTM zone boundary. The huge scene is never
allocated: an AOI over the grid cap is refused before any read.

Figures (``tests/_reports/fault_matrix.json``): per class the expected and observed outcome, the
misclassified count (pass: 0) and the lakes retired by the fault (pass: 0).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
from sqlalchemy import text

from db.engine import make_engine
from demo.synthetic import DemoCatalog
from flows.outcomes import report_of
from tests.data.faults.make import UTM, FaultScene, fault_catalog, lake_outline
from tests.helpers.database import fresh_database
from tests.helpers.flow_runs import demo_window
from tests.helpers.reports import REPORTS, write_report

REPORT = "fault_matrix"


@dataclass(frozen=True)
class Inventory:
    """What one run left in its database, read back for the comparisons."""

    lakes: gpd.GeoDataFrame
    """lake_id, status, geom (EPSG:32643)."""
    scenes: dict[str, dict[str, Any]]
    """S2 product id → cloud_state, s2_offset, no_footprint, cloud_fraction, valid_fraction, present,
    absent, area (m², present observations)."""
    absent: gpd.GeoDataFrame
    """One row per absent observation: s2_product_id, lake geometry (EPSG:32643)."""
    flow_run_id: str
    """The Prefect flow run the ledger recorded."""


def _inventory(url: str) -> Inventory:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            lakes = gpd.read_postgis(
                "SELECT lake_id, status, geom FROM inventory.lake ORDER BY lake_id", conn, geom_col="geom"
            ).to_crs(UTM)
            rows = conn.execute(
                text(
                    "SELECT s.s2_product_id, s.inputs->>'cloud_state' AS cloud_state, "
                    "s.inputs->>'s2_offset' AS s2_offset, s.valid_footprint IS NULL AS no_footprint, "
                    "s.cloud_fraction, s.valid_fraction, "
                    "count(o.observation_id) FILTER (WHERE o.present) AS present, "
                    "count(o.observation_id) FILTER (WHERE NOT o.present) AS absent, "
                    "coalesce(sum(o.area_m2) FILTER (WHERE o.present), 0) AS area "
                    "FROM inventory.scene s LEFT JOIN inventory.lake_observation o USING (scene_id) "
                    "GROUP BY s.scene_id"
                )
            ).mappings()
            scenes = {r["s2_product_id"]: dict(r) for r in rows}
            absent = gpd.read_postgis(
                "SELECT s.s2_product_id, l.geom FROM inventory.lake_observation o "
                "JOIN inventory.scene s USING (scene_id) JOIN inventory.lake l USING (lake_id) WHERE NOT o.present",
                conn,
                geom_col="geom",
            ).to_crs(UTM)
            flow_run_id = conn.execute(text("SELECT flow_run_id FROM inventory.ingest_run")).scalar_one()
    finally:
        engine.dispose()
    return Inventory(lakes, scenes, absent, str(flow_run_id))


def stack_task_runs(flow_run_id: str) -> list[tuple[str, int]]:
    """(state type, run count) of every prepare-stack task run of one flow run, from the Prefect API."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])))
    return [
        (str(r.state_type.value if r.state_type else None), int(r.run_count))
        for r in runs
        if r.name.startswith("prepare-stack")
    ]


def record(
    classes: dict[str, dict[str, Any]], run: str, lakes_retired: int, extra: dict[str, object] | None = None
) -> None:
    """Adds rows to the report's ``classes`` table and recomputes the pass figures over every class recorded.

    Each row: ``expected``, ``observed`` (in words), ``as_documented``. ``lakes_retired`` is per
    flow run (several classes share one). Figures: ``misclassified`` and ``lakes_retired`` (pass: 0, 0).
    """
    try:
        current = json.loads((REPORTS / f"{REPORT}.json").read_text())
    except (OSError, ValueError):
        current = {}
    rows = {**current.get("classes", {}), **{name: {**row, "run": run} for name, row in classes.items()}}
    retired = {**current.get("lakes_retired_by_run", {}), run: lakes_retired}
    write_report(
        REPORT,
        {
            "classes": rows,
            "lakes_retired_by_run": retired,
            "classes_recorded": len(rows),
            "misclassified": sorted(name for name, row in rows.items() if not row["as_documented"]),
            "misclassified_count": sum(1 for row in rows.values() if not row["as_documented"]),
            "lakes_retired": sum(retired.values()),
            **(extra or {}),
        },
    )


def retired_by_fault(clean: gpd.GeoDataFrame, faulty: gpd.GeoDataFrame) -> list[int]:
    """Lakes the faulty run retired where the clean run keeps a lake active (or has none retired).

    A faulty run's disappeared lake counts unless it overlaps a lake the clean run retired too.
    """
    gone = clean[clean.status == "disappeared"].geometry
    return [
        int(lake.lake_id)
        for lake in faulty[faulty.status == "disappeared"].itertuples()
        if not gone.intersects(lake.geom).any()
    ]


# --- the expected outcome of each scene fault class ---------------------------------------------


def _failed_naming(scene: FaultScene, outcome: Any, needle: str) -> tuple[str, bool]:
    reason = outcome.reason or ""
    names_file = any(str(f) in reason for f in scene.files)
    shown = reason
    for f in scene.files:  # the report shows the file's name, not this machine's temporary path
        shown = shown.replace(str(f.parent) + "/", "")
    observed = f"{outcome.status}: {shown[:240]}"
    ok = outcome.status == "failed" and reason.startswith("RasterInputError: ") and needle in reason
    return observed, ok and names_file and "\n" not in reason


EXPECTED = {
    "truncated": "failed: RasterInputError naming the cut band and the block read that failed, nothing merged",
    "missing_crs": "failed: RasterInputError naming the band, 'not georeferenced', nothing merged",
    "wrong_crs": "failed: RasterInputError naming the band, 'no valid pixel on the scene grid', nothing merged",
    "all_nodata": "failed: RasterInputError naming a band, 'no valid pixel', nothing merged (README: only nodata)",
    # README / tasks.scene.prepare_stack: cloud is an observation (merged, nothing observed); design §9
    # lists "all cloud" under skip-with-reason instead (an open design choice); the lakes are safe either way.
    "all_cloud": "processed: cloud fraction 1, no footprint, no observation, no absent row",
    "nan_nodata": "processed: the undeclared NaN is nodata (valid fraction below the clean clone's), "
    "no absent row for the lake under it, the other lakes as the clean clone",
    "offset_baseline": "processed: 1000 DN removed (baseline 05.09), observations equal to the clean clone's",
    "missing_scl": "processed: cloud state unknown, no footprint, lakes mapped, no absent row",
    "missing_baseline": "processed: the detector removes 1000 DN, observations equal to the clean clone's",
    "mismatched_grid": "processed: S1 (UTM 44N, 30 m, half-pixel shift) co-registered onto the grid, "
    "observations equal to the clean clone's",
}


def _same_observations(bad: dict[str, Any], good: dict[str, Any]) -> bool:
    return bool(
        bad["present"] == good["present"]
        and bad["absent"] == good["absent"]
        and math.isclose(float(bad["area"]), float(good["area"]), rel_tol=0.02)
    )


def _judge(
    fault: str, scene: FaultScene, outcome: Any, bad: Inventory, good: Inventory, catalog: DemoCatalog
) -> tuple[str, bool]:
    """(observed outcome in words, whether it is the documented one)."""
    if fault == "truncated":
        return _failed_naming(scene, outcome, "TIFFReadEncodedTile() failed")
    if fault == "missing_crs":
        return _failed_naming(scene, outcome, "not georeferenced")
    if fault == "wrong_crs":
        return _failed_naming(scene, outcome, "no valid pixel on the scene grid")
    if fault == "all_nodata":
        return _failed_naming(scene, outcome, "no valid pixel")
    row, ref = bad.scenes.get(scene.s2_id), good.scenes[scene.s2_id]
    if outcome.status != "processed" or row is None:
        return f"{outcome.status}: {outcome.reason}", False
    seen = (
        f"processed: cloud_state {row['cloud_state']}, cloud {row['cloud_fraction']}, valid "
        f"{row['valid_fraction']:.3f} (clean {ref['valid_fraction']:.3f}), footprint "
        f"{'none' if row['no_footprint'] else 'yes'}, present {row['present']} (clean {ref['present']}), "
        f"absent {row['absent']} (clean {ref['absent']}), offset {row['s2_offset']}"
    )
    if fault == "all_cloud":
        ok = row["cloud_fraction"] == 1.0 and row["no_footprint"] and row["present"] == 0 and row["absent"] == 0
        return seen, bool(ok)
    if fault == "missing_scl":
        ok = row["cloud_state"] == "unknown" and row["no_footprint"] and row["cloud_fraction"] is None
        return seen, bool(ok and row["present"] > 0 and row["absent"] == 0)
    if fault == "nan_nodata":
        draining = lake_outline(catalog, "draining")
        mine = bad.absent[bad.absent.s2_product_id == scene.s2_id]
        hidden = bool(mine.intersects(draining).any())
        clean_saw_it = bool(good.absent[good.absent.s2_product_id == scene.s2_id].intersects(draining).any())
        others = len(mine[~mine.intersects(draining)]) == ref["absent"] - int(clean_saw_it)
        ok = row["valid_fraction"] < ref["valid_fraction"] and clean_saw_it and not hidden and others
        return f"{seen}; absent over the NaN: {hidden} (clean: {clean_saw_it})", bool(ok)
    if fault == "offset_baseline":
        ok = row["s2_offset"].startswith("1000 DN (baseline: processing baseline 05.09")
        return seen, bool(ok and ref["s2_offset"].startswith("0 DN") and _same_observations(row, ref))
    if fault == "missing_baseline":
        ok = row["s2_offset"].startswith("1000 DN (detector:")
        return seen, bool(ok and _same_observations(row, ref))
    if fault == "mismatched_grid":
        return seen, _same_observations(row, ref)
    raise AssertionError(fault)


@pytest.mark.db
@pytest.mark.flow
@pytest.mark.slow
def test_every_scene_fault_class_yields_its_documented_outcome(
    pristine: DemoCatalog,
    tmp_path: Path,
    pg_url_base: str,
    template_db: str,
    flow_env: pytest.MonkeyPatch,
) -> None:
    from flows.update_inventory import update_inventory

    clean_catalog, scenes = fault_catalog(pristine, tmp_path / "clean", faulty=False)
    faulty_catalog, broken = fault_catalog(pristine, tmp_path / "faulty", faulty=True)
    assert {s.s2_id for s in scenes.values()} == {s.s2_id for s in broken.values()}
    assert all(s.files for f, s in broken.items() if f not in ("missing_scl", "missing_baseline"))

    with fresh_database(pg_url_base, template_db) as clean_url:
        flow_env.setenv("DATABASE_URL", clean_url)
        clean_report = update_inventory(**demo_window(clean_catalog))
        good = _inventory(clean_url)
    paired = len(pristine.dates) - 1 + len(scenes)
    assert clean_report.processed == paired and clean_report.failed == 0, clean_report.markdown()

    with fresh_database(pg_url_base, template_db) as faulty_url:
        flow_env.setenv("DATABASE_URL", faulty_url)
        # The faulty run ends Failed (some scenes failed): its report comes from the state.
        report = report_of(update_inventory(**demo_window(faulty_catalog), return_state=True))
        bad = _inventory(faulty_url)

    outcomes = {o.product_id: o for o in report.outcomes}
    fault_ids = {s.s2_id for s in broken.values()}
    # (b) every other scene of the run is processed, exactly as in the clean run.
    others = {pid: o.status for pid, o in outcomes.items() if pid not in fault_ids and o.status != "skipped"}
    assert others and set(others.values()) == {"processed"}, report.markdown()
    for pid in others:
        assert _same_observations(bad.scenes[pid], good.scenes[pid]), (pid, bad.scenes[pid], good.scenes[pid])

    matrix: dict[str, dict[str, Any]] = {}
    for fault, scene in broken.items():
        observed, ok = _judge(fault, scene, outcomes[scene.s2_id], bad, good, faulty_catalog)
        if outcomes[scene.s2_id].status == "failed":
            ok = ok and scene.s2_id not in bad.scenes  # a failed scene is never committed
        matrix[fault] = {"expected": EXPECTED[fault], "observed": observed, "as_documented": ok}
    # A permanent failure (a bad local file) is not retried: every stack task ran once.
    stack_runs = stack_task_runs(bad.flow_run_id)
    retried = [r for r in stack_runs if r[1] != 1]
    failed_stacks = sum(1 for state, _ in stack_runs if state == "FAILED")
    retired = retired_by_fault(good.lakes, bad.lakes)
    # (c) no absent row from a scene whose class does not observe (the failed ones have no scene at all).
    silent = ("all_cloud", "missing_scl")
    stray_absent = int(bad.absent.s2_product_id.isin([broken[f].s2_id for f in silent]).sum())
    misclassified = sorted(f for f, row in matrix.items() if not row["as_documented"])
    record(
        matrix,
        "scene_faults",
        len(retired),
        {
            "scene_faults_absent_rows_from_non_observing_scenes": stray_absent,
            "scene_faults_other_scenes_processed": f"{len(others)}/{len(others)}",
            "scene_faults_permanent_failures_retried": len(retried),
        },
    )
    print(json.dumps(matrix, indent=1))
    print(f"I1 scene faults: misclassified {len(misclassified)} {misclassified}, lakes retired {len(retired)}")
    assert not misclassified, {f: matrix[f] for f in misclassified}
    assert retired == [] and stray_absent == 0
    assert len(stack_runs) == paired and failed_stacks == 4 and retried == [], stack_runs
    assert len(bad.lakes[bad.lakes.status == "active"]) >= len(good.lakes[good.lakes.status == "active"])


def test_huge_scene_is_refused_before_any_read(tmp_path: Path) -> None:
    """The grid cap (tasks.grid.MAX_GRID_PIXELS) refuses an AOI whose 10 m grid would not fit the memory budget."""
    from click.testing import CliRunner

    from flows.cli import main
    from tasks.grid import MAX_GRID_PIXELS

    aoi = tmp_path / "huge.geojson"  # 2° × 2° at 45° N: about 350 M px at 10 m
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [[[10, 44], [12, 44], [12, 46], [10, 46], [10, 44]]]}))
    env = {"GLACIAL_LAKES_HOME": str(tmp_path / "home"), "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    args = ["run", "--aoi", str(aoi), "--start", "2024-07-01", "--end", "2024-07-02", "--source", "local:x"]
    result = CliRunner().invoke(main, args, env=env)
    out = result.output.strip()
    ok = result.exit_code == 2 and "px grid" in out and str(aoi) in out and len(out.splitlines()) == 1
    shown = out.replace(str(aoi), aoi.name)[:200]
    row = {
        "expected": "refused before any read: exit 2, one line naming the AOI and its grid size (grid cap)",
        "observed": f"exit {result.exit_code}: {shown}",
        "as_documented": ok,
    }
    record({"huge_scene": row}, "huge_scene", 0, {"max_grid_pixels": MAX_GRID_PIXELS})
    assert ok, (result.exit_code, out)
