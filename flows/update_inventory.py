"""``update_inventory``: the scheduled flow. Search → pair → per scene: stack → segment → lakes → merge.

One failed scene never aborts the others; the run ends with a report (Prefect artifacts and a
``RunReport`` return value). Settings (database, data root) are read here, at the edge: the
database URL is never a flow parameter, so it is never stored or shown by the Prefect API.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import geopandas as gpd
from prefect import flow, get_run_logger
from prefect.context import get_run_context
from pydantic import SecretStr
from sqlalchemy import Engine

from core.errors import interrupted
from core.progress import report_progress
from db.ledger import (
    PARAMS_INPUT,
    AcquisitionRow,
    committed_params,
    lake_changes_of_scenes,
    params_conflict,
    record_acquisitions,
    scene_keys_for_aoi,
    set_acquisition_status,
)
from db.merge import ensure_aoi
from db.records import MergeConfig, SceneResult
from db.runs import start_run
from flows.aoi import AoiSpec
from flows.database import ready_engine
from flows.outcomes import Disposition, classify, describe, final_state, run_status
from flows.report import LakeChange, RunReport, SceneOutcome
from flows.report_artifacts import publish_report
from flows.settings import Settings, load_settings
from flows.tasks import extract_lakes_task, merge_task, prepare_stack_task, search_task, segment_task
from models.hub import HubCache
from models.registry import load_segmenter
from tasks.acquisition import ledger_href, redact_urls
from tasks.grid import GridSpec, grid_for_geometry, utm_epsg_for
from tasks.pairing import ScenePlan, pair_scenes, params_hash, scene_key
from tasks.sources import Acquisition
from tasks.stack import StackInfo
from tasks.validity import cloud_state_of


@dataclass(frozen=True)
class SceneContext:
    """What every scene of one run shares."""

    aoi_name: str
    grid: GridSpec
    data_dir: Path
    model: str
    model_version: str
    tta: bool
    hub: HubCache
    """Where ``hf://`` model specs are resolved."""
    threshold: float
    min_area_m2: float
    merge_config: MergeConfig

    @property
    def params(self) -> dict[str, object]:
        """The processing parameters hashed into each scene key: threshold, min area (m²), grid."""
        return {
            "threshold": self.threshold,
            "min_area_m2": self.min_area_m2,
            "grid": [self.grid.epsg, *self.grid.transform, self.grid.width, self.grid.height],
        }

    @property
    def stated_params(self) -> dict[str, object]:
        """:attr:`params` as stored with each scene (sorted-key JSON, read back): the form compared."""
        stated: dict[str, object] = json.loads(json.dumps(self.params, sort_keys=True, default=str))
        return stated


def process_scene(plan: ScenePlan, ctx: SceneContext, key: str, db: SecretStr) -> SceneOutcome:
    """One scene from files to merge. Raises on failure; the caller records it (:mod:`flows.outcomes`)."""
    scene_dir = ctx.data_dir / "scenes" / key[:16]
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    stack = prepare_stack_task(plan, ctx.grid, scene_dir)
    observation = _observation_inputs(plan, stack)
    t1 = time.perf_counter()
    probability = segment_task(stack, ctx.model, scene_dir / "probability.tif", ctx.tta, ctx.hub)
    t2 = time.perf_counter()
    extracted = extract_lakes_task(stack, probability, ctx.threshold, ctx.min_area_m2)
    t3 = time.perf_counter()
    timings.update(stack=t1 - t0, segment=t2 - t1, extract=t3 - t2)
    result = SceneResult(
        scene_key=key,
        aoi_name=ctx.aoi_name,
        sensing_time=plan.s2.sensing_time,
        s2_product_id=plan.s2.product_id,
        s1_product_id=plan.s1.product_id,
        dem_id=plan.dem_id,
        model_version=ctx.model_version,
        params_hash=params_hash(ctx.params),
        valid_footprint=extracted.footprint,
        cloud_fraction=None if math.isnan(stack.cloud_fraction) else stack.cloud_fraction,
        valid_fraction=stack.valid_fraction,
        lakes=extracted.lakes,
        inputs={
            "stack": str(stack.path),
            "probability": str(probability),
            # What the inputs were (the ledger key covers them) and the parameters, for the
            # merge's check that one AOI's scenes share one parameter set.
            "fingerprints": ",".join((plan.s2.fingerprint, plan.s1.fingerprint, *(d.fingerprint for d in plan.dems))),
            "dem_tiles": json.dumps([d.product_id for d in plan.dems]),
            **dict(stack.quality),  # the measured co-registration of S1 and the DEM against S2
            PARAMS_INPUT: json.dumps(ctx.stated_params, sort_keys=True),
            **observation,
        },
        utm_epsg=ctx.grid.epsg,  # CRS of the footprint and of the lakes' outlines
    )
    merge = merge_task(db, result, ctx.merge_config)
    timings["merge"] = time.perf_counter() - t3
    return SceneOutcome(
        plan.s2.product_id, "processed", None, merge, cloud_fraction=result.cloud_fraction, timings=timings
    )


def _observation_inputs(plan: ScenePlan, stack: StackInfo) -> dict[str, str]:
    """How the scene's S2 was read (tasks.validity), for its inputs; logs what no item stated.

    ``cloud_state``: "scl", or "unknown" when the item has no SCL (the scene then marks no lake
    absent: its footprint is None). ``s2_offset``: the DN offset removed and why (the processing
    baseline, or the offset detector's percentiles when the item states no baseline).
    """
    logger = get_run_logger()
    state = cloud_state_of(stack.cloud_fraction)
    if state == "unknown":
        logger.warning("%s: no SCL, cloud state unknown: its lakes are mapped, none is marked absent", plan.scene_id)
    if stack.s2_offset is None:  # prepare_stack always decides; a stack without the record is a bug
        raise RuntimeError(f"{stack.path}: stack has no S2 offset decision")
    if stack.s2_offset.source == "detector":
        logger.info("%s: no processing baseline; S2 offset %s", plan.scene_id, stack.s2_offset.describe())
    return {"cloud_state": state, "s2_offset": stack.s2_offset.describe()}


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


_USERINFO = re.compile(r"(://)[^/@\s]+@")


def public_source(source: str) -> str:
    """``source`` as it may be stored and shown: URL query strings and ``user:password@`` removed."""
    return redact_urls(_USERINFO.sub(r"\1…@", source))


@flow(name="update-inventory", log_prints=False)
def update_inventory(
    aoi: AoiSpec,
    start: date,
    end: date,
    source: str,
    model: str | None = None,
    rerun: bool = False,
) -> RunReport:
    """Bring one AOI's inventory up to date for acquisitions sensed in [start, end].

    The run's final state says what happened (:func:`flows.outcomes.final_state`): Completed
    when every scene landed (skips carry their reason), else Failed, named ``Partial`` when
    some scenes landed; the report (Prefect artifacts, the ledger's ``ingest_run`` row) is
    written either way, and is the state's result: call with ``return_state=True`` and read it
    with :func:`flows.outcomes.report_of` to get it from a Failed run too.

    Args:
        aoi: the area (EPSG:4326) and its name.
        start: first sensing day of the window, inclusive (UTC).
        end: last sensing day of the window, inclusive (UTC).
        source: ``local:DIR`` or ``stac:URL``.
        model: segmenter spec; default from ``GLACIAL_LAKES_MODEL``.
        rerun: process scenes whose ledger key is already committed again (their merge is
            still a no-op unless the inputs, model or parameters changed).
    """
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
    shown = public_source(source)
    run_key = hashlib.sha256(f"{aoi.name}|{start}|{end}|{source}|{segmenter.version}".encode()).hexdigest()
    flow_run_id = str(get_run_context().flow_run.id)  # type: ignore[union-attr]
    request = {"start": str(start), "end": str(end), "source": shown, "model": segmenter.version, "rerun": rerun}
    # The row is closed in every outcome: finished below, closed 'failed' by the lease on an
    # exception, closed 'crashed' by the next run's start when this process dies (db.runs).
    with start_run(engine, run_key, aoi_id, flow_run_id, request) as lease:
        report = _update(_Run(aoi, aoi_id, start, end, source, rerun, ctx, db, epsg, flow_run_id), settings, engine)
        lease.finish(run_status(report), report.totals(), report.failures())
    # Prefect unwraps a returned State: a caller gets the report of a Completed run, and a Failed
    # one raises unless called with return_state=True (then flows.outcomes.report_of).
    return final_state(report)  # type: ignore[return-value]


@dataclass(frozen=True)
class _Run:
    """What one run of :func:`update_inventory` was asked and is working with."""

    aoi: AoiSpec
    aoi_id: int
    start: date
    end: date
    source: str
    rerun: bool
    ctx: SceneContext
    db: SecretStr
    epsg: int
    flow_run_id: str


def _update(run: _Run, settings: Settings, engine: Engine) -> RunReport:
    """Search, pair, process every scene by the outcome policy, publish the report."""
    logger = get_run_logger()
    aoi, aoi_id, ctx, rerun = run.aoi, run.aoi_id, run.ctx, run.rerun
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # S1 and DEM are searched over the window widened by the pairing tolerance, S2 inside it.
    acquisitions = search_task(run.source, aoi, run.start, run.end, settings.stac_options, settings.max_pair_days)
    t1 = time.perf_counter()
    record_acquisitions(engine, aoi_id, _acquisition_rows(acquisitions))
    plans, skipped = pair_scenes(acquisitions, aoi.shape, settings.max_pair_days)
    timings.update(search=t1 - t0, pair=time.perf_counter() - t1)
    outcomes = [SceneOutcome(s.product_id, "skipped", s.reason) for s in skipped]
    for s in skipped:
        set_acquisition_status(engine, aoi_id, [s.product_id], "skipped", s.reason)

    candidates = {
        p.scene_id: (scene_key(p, ctx.model_version, ctx.params, aoi.name), scene_key(p, ctx.model_version, ctx.params))
        for p in plans
    }
    keys, done = scene_keys_for_aoi(engine, aoi_id, candidates)
    n_s2 = len(plans) + len(skipped)
    logger.info("%s: %d S2 acquisitions, %d paired, %d already processed", aoi.name, n_s2, len(plans), len(done))
    # Checked once before any scene is computed (the merge checks again, under the AOI's lock).
    conflict = params_conflict(committed_params(engine, aoi_id), params_hash(ctx.params), ctx.stated_params)
    for i, plan in enumerate(plans, 1):
        outcome = _one_scene(plan, ctx, keys[plan.scene_id], run.db, done, rerun, conflict, f"[{i}/{len(plans)}]")
        set_acquisition_status(engine, aoi_id, *_ledger_status(plan, outcome))
        outcomes.append(outcome)
        report_progress(f"{aoi.name}: scenes", i, len(plans), f"{plan.scene_id} {outcome.status}")

    t2 = time.perf_counter()
    for stage in ("stack", "segment", "extract", "merge"):
        timings[stage] = sum(o.timings.get(stage, 0.0) for o in outcomes)
    landed = [keys[p.scene_id] for p, o in zip(plans, outcomes[len(skipped) :], strict=True) if o.merge is not None]
    changes = lake_changes_of_scenes(engine, landed)
    report = RunReport(
        aoi=aoi.name,
        model=ctx.model_version,
        found=n_s2,
        outcomes=tuple(outcomes),
        changes=tuple(_lake_changes(changes)),
        timings=timings,
        flow_run_id=run.flow_run_id,
    )
    png = ctx.data_dir / "reports" / f"{run.flow_run_id}.png"
    publish_report(report, aoi.shape, changes, run.epsg, png)
    timings["report"] = time.perf_counter() - t2  # the same dict: the returned report shows it too
    return report


def _one_scene(
    plan: ScenePlan,
    ctx: SceneContext,
    key: str,
    db: SecretStr,
    done: set[str],
    rerun: bool,
    conflict: str | None,
    step: str,
) -> SceneOutcome:
    """One scene's outcome by the policy (:mod:`flows.outcomes`); never raises for the scene's own errors."""
    logger = get_run_logger()
    if plan.scene_id in done and not rerun:
        return SceneOutcome(plan.scene_id, "skipped", "already processed")
    if conflict is not None:
        reason = f"ParameterMismatchError: {conflict}"
        logger.error("%s refused: %s", plan.scene_id, reason)
        return SceneOutcome(plan.scene_id, "failed", reason, disposition=Disposition.FAIL.value)
    logger.info("%s %s", step, plan.scene_id)
    try:
        return process_scene(plan, ctx, key, db)
    except Exception as exc:  # one failed scene never aborts the others
        if interrupted(exc):  # a signal (SIGTERM, Ctrl-C) that a library turned into its error ends the run
            raise
        disposition = classify(exc)
        reason = describe(exc)
        logger.error(
            "%s %s (%s): %s",
            plan.scene_id,
            "quarantined" if disposition is Disposition.QUARANTINE else "failed",
            disposition.value,
            reason,
        )
        return SceneOutcome(plan.scene_id, "failed", reason, disposition=disposition.value)


def _ledger_status(plan: ScenePlan, outcome: SceneOutcome) -> tuple[list[str], str, str | None]:
    """Which acquisitions the outcome marks, with which status and reason."""
    if outcome.status == "processed":
        return [plan.s2.product_id, plan.s1.product_id], "processed", None
    if outcome.quarantined:
        return [plan.s2.product_id], "quarantined", outcome.reason
    if outcome.status == "failed":
        return [plan.s2.product_id], "failed", outcome.reason
    return [], outcome.status, outcome.reason  # "already processed": the ledger keeps the earlier outcome


def _lake_changes(changes: gpd.GeoDataFrame) -> list[LakeChange]:
    rows = changes.itertuples(index=False)
    return [
        LakeChange(
            lake_id=int(r.lake_id),
            change_kind=str(r.change_kind),
            area_m2=None if r.area_m2 is None or math.isnan(r.area_m2) else float(r.area_m2),
            area_change_m2=None
            if r.area_change_m2 is None or math.isnan(r.area_change_m2)
            else float(r.area_change_m2),
        )
        for r in rows
    ]
