"""``update_inventory``: the scheduled flow. Search → pair → per scene: stack → segment → lakes → merge.

One failed scene never aborts the others; the run ends with a report (Prefect artifacts and a
``RunReport`` return value). Settings (database, data root) are read here, at the edge: the
database URL is never a flow parameter, so it is never stored or shown by the Prefect API.
"""

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import get_run_context
from pydantic import Field, SecretStr

from db.ledger import (
    PARAMS_INPUT,
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
from db.records import MergeConfig, SceneResult
from flows.aoi import AoiSpec
from flows.database import ready_engine
from flows.report import RunReport, SceneOutcome
from flows.settings import load_settings
from flows.tasks import extract_lakes_task, merge_task, prepare_stack_task, search_task, segment_task
from flows.window import DEFAULT_DAYS, MAX_DAYS, rolling_window
from models.hub import HubCache
from models.registry import load_segmenter
from tasks.acquisition import ledger_href
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
    """One scene from files to merge. Raises on failure; the caller records it."""
    scene_dir = ctx.data_dir / "scenes" / key[:16]
    stack = prepare_stack_task(plan, ctx.grid, scene_dir)
    observation = _observation_inputs(plan, stack)
    probability = segment_task(stack, ctx.model, scene_dir / "probability.tif", ctx.tta, ctx.hub)
    extracted = extract_lakes_task(stack, probability, ctx.threshold, ctx.min_area_m2)
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
    return SceneOutcome(plan.s2.product_id, "processed", None, merge)


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


@flow(name="update-inventory", log_prints=False)
def update_inventory(
    aoi: AoiSpec,
    source: str,
    start: date | None = None,
    end: date | None = None,
    days: Annotated[int, Field(ge=1, le=MAX_DAYS)] = DEFAULT_DAYS,
    model: str | None = None,
    rerun: bool = False,
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
        try:
            outcome = process_scene(plan, ctx, key, db)
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
