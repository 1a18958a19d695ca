"""``update_inventory``: the scheduled flow. Search → pair → per scene: stack → segment → lakes → merge.

One failed scene never aborts the others; the run ends with a report (Prefect artifacts and a
``RunReport`` return value). Settings (database, data root) are read here, at the edge: the
database URL is never a flow parameter, so it is never stored or shown by the Prefect API.
"""

from __future__ import annotations

import hashlib
from datetime import date

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import get_run_context
from prefect.futures import PrefectFuture
from pydantic import SecretStr

from db.ledger import (
    AcquisitionRow,
    committed_params,
    committed_scene_keys,
    finish_run,
    params_conflict,
    record_acquisitions,
    set_acquisition_status,
    start_run,
)
from db.merge import ensure_aoi
from db.records import MergeConfig
from flows.aoi import AoiSpec
from flows.database import ready_engine
from flows.report import RunReport, SceneOutcome
from flows.runner import scene_task_runner
from flows.scene import SceneContext
from flows.settings import load_settings
from flows.tasks import process_scene_task, search_task
from models.registry import load_segmenter
from tasks.acquisition import ledger_href
from tasks.grid import grid_for_geometry, utm_epsg_for
from tasks.pairing import ScenePlan, pair_scenes, params_hash, scene_key
from tasks.sources import Acquisition


def _acquisition_rows(acquisitions: list[Acquisition]) -> list[AcquisitionRow]:
    return [
        AcquisitionRow(
            product_id=a.product_id,
            platform=a.platform,
            kind=a.kind,
            sensing_time=a.sensing_time,
            footprint=a.footprint,
            source=a.source,
            href=ledger_href(a),  # unsigned: a token never reaches the database
            properties={"processing_baseline": a.processing_baseline, "cloud_cover": a.cloud_cover},
        )
        for a in acquisitions
    ]


# Scenes go to the task runner of flows.runner (one after another by default, or a Dask cluster).
@flow(name="update-inventory", log_prints=False, task_runner=scene_task_runner())
def update_inventory(
    aoi: AoiSpec,
    start: date,
    end: date,
    source: str,
    model: str | None = None,
    rerun: bool = False,
) -> RunReport:
    """Bring one AOI's inventory up to date for acquisitions sensed in [start, end].

    Args:
        aoi: the area (EPSG:4326) and its name.
        start: first sensing day of the window, inclusive (UTC).
        end: last sensing day of the window, inclusive (UTC).
        source: ``local:DIR`` or ``stac:URL``.
        model: segmenter spec; default from ``GLACIAL_LAKES_MODEL``.
        rerun: process scenes whose ledger key is already committed again (their merge is
            still a no-op unless the inputs, model or parameters changed).
    """
    logger = get_run_logger()
    settings = load_settings()
    engine = ready_engine(settings)
    db = SecretStr(str(engine.url.render_as_string(hide_password=False)))
    model_spec = model or settings.model
    segmenter = load_segmenter(model_spec, settings.tta, settings.hub)
    epsg = utm_epsg_for(aoi.shape.centroid.x, aoi.shape.centroid.y)
    ctx = SceneContext(
        aoi_name=aoi.name,
        grid=grid_for_geometry(aoi.shape, epsg),
        data_dir=settings.data_root / aoi.name,
        model=model_spec,
        model_version=segmenter.version,
        tta=settings.tta,
        hub=settings.hub,
        threshold=settings.threshold,
        min_area_m2=settings.min_area_m2,
        merge_config=MergeConfig(),
    )
    aoi_id = ensure_aoi(engine, aoi.name, aoi.shape, epsg)
    run_key = hashlib.sha256(f"{aoi.name}|{start}|{end}|{source}|{segmenter.version}".encode()).hexdigest()
    run_id = start_run(engine, run_key, aoi_id, str(get_run_context().flow_run.id))  # type: ignore[union-attr]

    # S1 and DEM are searched over the window widened by the pairing tolerance, S2 inside it.
    acquisitions = search_task(source, aoi, start, end, settings.stac_options, settings.max_pair_days)
    record_acquisitions(engine, aoi_id, _acquisition_rows(acquisitions))
    plans, skipped = pair_scenes(acquisitions, aoi.shape, settings.max_pair_days)
    outcomes = [SceneOutcome(s.product_id, "skipped", s.reason) for s in skipped]
    for s in skipped:
        set_acquisition_status(engine, [s.product_id], "skipped", s.reason)

    keys = {p.scene_id: scene_key(p, segmenter.version, ctx.params) for p in plans}
    done = committed_scene_keys(engine, list(keys.values()))
    n_s2 = len(plans) + len(skipped)
    logger.info("%s: %d S2 acquisitions, %d paired, %d already processed", aoi.name, n_s2, len(plans), len(done))
    # Checked once before any scene is computed (the merge checks again, under the AOI's lock).
    conflict = params_conflict(committed_params(engine, aoi_id), params_hash(ctx.params), ctx.stated_params)
    submitted: list[tuple[ScenePlan, PrefectFuture[SceneOutcome]]] = []
    for i, plan in enumerate(plans, 1):
        key = keys[plan.scene_id]
        if key in done and not rerun:
            outcomes.append(SceneOutcome(plan.scene_id, "skipped", "already processed"))
            continue
        if conflict is not None:
            reason = f"ParameterMismatchError: {conflict}"
            logger.error("%s refused: %s", plan.scene_id, reason)
            set_acquisition_status(engine, [plan.scene_id], "failed", reason)
            outcomes.append(SceneOutcome(plan.scene_id, "failed", reason))
            continue
        logger.info("[%d/%d] %s", i, len(plans), plan.scene_id)
        submitted.append((plan, process_scene_task.submit(plan, ctx, key, db)))
    for plan, future in submitted:  # in plan order, whichever worker finished first
        try:
            outcome = future.result()
        except Exception as exc:  # one failed scene never aborts the others
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            logger.error("%s failed: %s", plan.scene_id, reason)
            set_acquisition_status(engine, [plan.scene_id], "failed", reason)
            outcomes.append(SceneOutcome(plan.scene_id, "failed", reason))
            continue
        set_acquisition_status(engine, [plan.s2.product_id, plan.s1.product_id], "processed")
        outcomes.append(outcome)

    report = RunReport(aoi=aoi.name, model=segmenter.version, found=n_s2, outcomes=tuple(outcomes))
    finish_run(
        engine,
        run_id,
        "failed" if report.failed else "committed",
        report.totals(),
        [{"acquisition": o.product_id, "error": o.reason} for o in outcomes if o.status == "failed"],
    )
    slug = "".join(c if c.isalnum() else "-" for c in aoi.name.lower())
    create_markdown_artifact(report.markdown(), key=f"inventory-update-{slug}")
    create_table_artifact(report.table_rows(), key=f"lake-changes-{slug}")
    return report
