"""``update_inventory``: the scheduled flow. Search → pair → per scene: stack → segment → lakes → merge.

A scene is one S2 acquisition in one UTM zone part of the AOI: one per acquisition for an AOI
within one zone, one per part the acquisition reaches for an AOI across zones (:mod:`tasks.zones`).

One failed scene never aborts the others; the run ends with a report (Prefect artifacts and a
``RunReport`` return value). Settings (database, data root) are read here, at the edge: the
database URL is never a flow parameter, so it is never stored or shown by the Prefect API.
"""

import hashlib
from datetime import date
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import get_run_context
from prefect.futures import PrefectFuture
from pydantic import Field, SecretStr

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
from flows.scene import SceneContext, part_name
from flows.settings import load_settings
from flows.tasks import process_scene_task, search_task
from flows.window import DEFAULT_DAYS, MAX_DAYS, rolling_window
from models.registry import load_segmenter
from tasks.acquisition import ledger_href
from tasks.grid import utm_epsg_for
from tasks.pairing import ScenePlan, pair_scenes, params_hash
from tasks.sources import Acquisition
from tasks.zones import ZonePart, partition_aoi


def _decide(
    plan: ScenePlan, part: ZonePart, ctx: SceneContext, key: str, done: set[str], rerun: bool, conflict: str | None
) -> SceneOutcome | None:
    """The outcome of ``plan`` in ``part`` decided without computing it (skipped, refused); None: compute it."""
    name = part_name(ctx, part)
    if key in done and not rerun:
        return SceneOutcome(plan.scene_id, "skipped", "already processed", part=name)
    if not ctx.partition.single and not part.reached_by(plan.s2.footprint):
        return SceneOutcome(plan.scene_id, "skipped", "S2 footprint does not reach this UTM zone part", part=name)
    if conflict is not None:
        reason = f"ParameterMismatchError: {conflict}"
        get_run_logger().error("%s refused: %s", _where(plan, name), reason)
        return SceneOutcome(plan.scene_id, "failed", reason, part=name)
    return None


def _resolved(plan: ScenePlan, name: str | None, future: PrefectFuture[SceneOutcome]) -> SceneOutcome:
    """The submitted scene's outcome; a failure becomes a failed outcome naming its cause (never raises)."""
    try:
        return future.result()
    except Exception as exc:  # one failed scene never aborts the others
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        get_run_logger().error("%s failed: %s", _where(plan, name), reason)
        return SceneOutcome(plan.scene_id, "failed", reason, part=name)


def _where(plan: ScenePlan, name: str | None) -> str:
    return plan.scene_id if name is None else f"{plan.scene_id} in {name}"


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


@flow(name="update-inventory", log_prints=False, task_runner=scene_task_runner())
def update_inventory(
    aoi: AoiSpec,
    source: str,
    start: date | None = None,
    end: date | None = None,
    days: Annotated[int, Field(ge=1, le=MAX_DAYS)] = DEFAULT_DAYS,
    model: str | None = None,
    rerun: bool = False,
    supersede: bool = False,
) -> RunReport:
    """Bring one AOI's inventory up to date for acquisitions sensed in [start, end].

    The parameters are typed (pydantic) so Prefect validates them and its UI renders a form;
    this module must not use postponed annotations (``from __future__ import annotations``):
    a worker rebuilds the parameter model in a fresh process, where string annotations would
    name types it cannot resolve.

    Args:
        aoi: the area (EPSG:4326) and its name.
        source: ``local:DIR`` or ``stac:URL``.
        start: first sensing day of the window, inclusive (UTC); default: rolling, the day of
            the AOI's last processed acquisition, or ``end - days`` when nothing is processed
            yet (:mod:`flows.window`).
        end: last sensing day of the window, inclusive (UTC); default: today.
        days: look-back of the AOI's first rolling window, days.
        model: segmenter spec; default from ``GLACIAL_LAKES_MODEL``.
        rerun: process scenes whose ledger key is already committed again (their merge is
            still a no-op unless the inputs, model or parameters changed).
        supersede: each scene replaces the AOI's earlier scenes of its S2 product (another
            model or parameters): see :attr:`db.records.SceneResult.supersede`. The AOI's
            parameter check is then not applied (the rerun asks for the new parameters).
    """
    logger = get_run_logger()
    settings = load_settings()
    engine = ready_engine(settings)
    window = rolling_window(engine, aoi.name, start, end, days)
    start, end = window.start, window.end
    logger.info("%s: sensing window %s", aoi.name, window.describe())
    db = SecretStr(str(engine.url.render_as_string(hide_password=False)))
    model_spec = model or settings.model
    segmenter = load_segmenter(model_spec, settings.tta, settings.hub)
    partition = partition_aoi(aoi.shape, margin_m=settings.zone_margin_m)
    if not partition.single:
        logger.info(
            "%s crosses UTM zones: processed in %d parts (%s), %g m beyond each seam",
            aoi.name,
            len(partition.parts),
            ", ".join(f"{p.label} {p.grid.width}x{p.grid.height} px" for p in partition.parts),
            partition.margin_m,
        )
    ctx = SceneContext(
        aoi_name=aoi.name,
        partition=partition,
        data_dir=settings.data_root / aoi.name,
        model=model_spec,
        model_version=segmenter.version,
        tta=settings.tta,
        hub=settings.hub,
        threshold=settings.threshold,
        min_area_m2=settings.min_area_m2,
        merge_config=MergeConfig(),
        supersede=supersede,
    )
    # The AOI's stated CRS stays its centroid's zone (the merge measures overlaps there); each
    # scene states its own part's zone.
    aoi_id = ensure_aoi(engine, aoi.name, aoi.shape, utm_epsg_for(aoi.shape.centroid.x, aoi.shape.centroid.y))
    run_key = hashlib.sha256(f"{aoi.name}|{start}|{end}|{source}|{segmenter.version}".encode()).hexdigest()
    run_id = start_run(engine, run_key, aoi_id, str(get_run_context().flow_run.id))  # type: ignore[union-attr]

    # S1 and DEM are searched over the window widened by the pairing tolerance, S2 inside it.
    acquisitions = search_task(source, aoi, start, end, settings.stac_options, settings.max_pair_days)
    record_acquisitions(engine, aoi_id, _acquisition_rows(acquisitions))
    plans, skipped = pair_scenes(acquisitions, aoi.shape, settings.max_pair_days)
    outcomes = [SceneOutcome(s.product_id, "skipped", s.reason) for s in skipped]
    for s in skipped:
        set_acquisition_status(engine, [s.product_id], "skipped", s.reason)

    keys = {(p.scene_id, part.epsg): ctx.scene_key(p, part) for p in plans for part in partition.parts}
    done = committed_scene_keys(engine, list(keys.values()))
    n_s2 = len(plans) + len(skipped)
    logger.info(
        "%s: %d S2 acquisitions, %d paired, %d of %d scenes already processed",
        aoi.name,
        n_s2,
        len(plans),
        len(done),
        len(keys),
    )
    # Checked once before any scene is computed (the merge checks again, under the AOI's lock).
    conflict = (
        None
        if supersede
        else params_conflict(committed_params(engine, aoi_id), params_hash(ctx.params), ctx.stated_params)
    )
    # Every scene is decided, then submitted to the run's task runner (flows.runner: one after
    # another by default, spread over a Dask cluster on request); outcomes are read in plan order.
    pending: list[tuple[ScenePlan, list[SceneOutcome | tuple[str | None, PrefectFuture[SceneOutcome]]]]] = []
    for i, plan in enumerate(plans, 1):
        logger.info("[%d/%d] %s", i, len(plans), plan.scene_id)
        per_part: list[SceneOutcome | tuple[str | None, PrefectFuture[SceneOutcome]]] = []
        for part in partition.parts:
            key = keys[(plan.scene_id, part.epsg)]
            decided = _decide(plan, part, ctx, key, done, rerun, conflict)
            if decided is None:
                decided_or_future = (part_name(ctx, part), process_scene_task.submit(plan, ctx, part, key, db))
                per_part.append(decided_or_future)
            else:
                per_part.append(decided)
        pending.append((plan, per_part))
    for plan, per_part in pending:
        scenes = [o if isinstance(o, SceneOutcome) else _resolved(plan, *o) for o in per_part]
        outcomes += scenes
        failed = [o for o in scenes if o.status == "failed"]
        if failed:  # the acquisition failed if any of its scenes did; the reason names the part
            reason = "; ".join(f"{o.part}: {o.reason}" if o.part else str(o.reason) for o in failed)[:500]
            set_acquisition_status(engine, [plan.scene_id], "failed", reason)
        elif any(o.status == "processed" for o in scenes):
            set_acquisition_status(engine, [plan.s2.product_id, plan.s1.product_id], "processed")

    report = RunReport(
        aoi=aoi.name,
        model=segmenter.version,
        found=n_s2,
        outcomes=tuple(outcomes),
        zone_parts=() if partition.single else tuple(p.label for p in partition.parts),
    )
    finish_run(
        engine,
        run_id,
        "failed" if report.failed else "committed",
        report.totals(),
        [{"acquisition": o.label, "error": o.reason} for o in outcomes if o.status == "failed"],
    )
    slug = "".join(c if c.isalnum() else "-" for c in aoi.name.lower())
    create_markdown_artifact(report.markdown(), key=f"inventory-update-{slug}")
    create_table_artifact(report.table_rows(), key=f"lake-changes-{slug}")
    return report
