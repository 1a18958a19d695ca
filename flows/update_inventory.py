"""``update_inventory``: the scheduled flow. Search → pair → per scene: stack → segment → lakes → merge.

A scene is one S2 acquisition in one UTM zone part of the AOI: one per acquisition for an AOI
within one zone, one per part the acquisition reaches for an AOI across zones (:mod:`tasks.zones`).

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
from tasks.grid import utm_epsg_for
from tasks.pairing import ScenePlan, pair_scenes, params_hash, scene_key
from tasks.sources import Acquisition
from tasks.stack import StackInfo
from tasks.validity import cloud_state_of
from tasks.zones import ZonePart, ZonePartition, partition_aoi, restrict_to_part


@dataclass(frozen=True)
class SceneContext:
    """What every scene of one run shares."""

    aoi_name: str
    partition: ZonePartition
    """The AOI's UTM zone parts, each with its grid (one part for an AOI within one zone)."""
    data_dir: Path
    model: str
    model_version: str
    tta: bool
    hub: HubCache
    """Where ``hf://`` model specs are resolved."""
    threshold: float
    min_area_m2: float
    merge_config: MergeConfig
    supersede: bool = False
    """A rerun: each scene supersedes the AOI's earlier scenes of its S2 product."""

    @property
    def params(self) -> dict[str, object]:
        """The processing parameters hashed into each scene key: threshold, min area (m²), grid(s).

        One set for all the AOI's scenes (the merge refuses a scene whose set differs): an AOI
        across zones states every part's grid (:meth:`tasks.zones.ZonePartition.grid_param`).
        """
        return {
            "threshold": self.threshold,
            "min_area_m2": self.min_area_m2,
            "grid": self.partition.grid_param(),
        }

    def scene_key(self, plan: ScenePlan, part: ZonePart) -> str:
        """Ledger key of ``plan`` in ``part``: the part is in it when the AOI has several."""
        return scene_key(plan, self.model_version, self.partition.key_params(self.params, part))

    @property
    def stated_params(self) -> dict[str, object]:
        """:attr:`params` as stored with each scene (sorted-key JSON, read back): the form compared."""
        stated: dict[str, object] = json.loads(json.dumps(self.params, sort_keys=True, default=str))
        return stated


def process_scene(plan: ScenePlan, ctx: SceneContext, part: ZonePart, key: str, db: SecretStr) -> SceneOutcome:
    """One scene (one S2 acquisition in one zone part) from files to merge. Raises on failure."""
    scene_dir = ctx.data_dir / "scenes" / key[:16]
    stack = prepare_stack_task(plan, part.grid, scene_dir)
    observation = _observation_inputs(plan, stack)
    probability = segment_task(stack, ctx.model, scene_dir / "probability.tif", ctx.tta, ctx.hub)
    extracted = extract_lakes_task(stack, probability, ctx.threshold, ctx.min_area_m2)
    # The lakes this part decides and the ground it may mark absent (all of both for one part).
    mine = restrict_to_part(extracted.lakes, extracted.footprint, part, ctx.partition)
    zone = {} if ctx.partition.single else _zone_inputs(plan, part, mine.others, mine.cut)
    result = SceneResult(
        scene_key=key,
        aoi_name=ctx.aoi_name,
        sensing_time=plan.s2.sensing_time,
        s2_product_id=plan.s2.product_id,
        s1_product_id=plan.s1.product_id,
        dem_id=plan.dem_id,
        model_version=ctx.model_version,
        params_hash=params_hash(ctx.params),
        valid_footprint=mine.footprint,
        cloud_fraction=None if math.isnan(stack.cloud_fraction) else stack.cloud_fraction,
        valid_fraction=stack.valid_fraction,
        lakes=mine.lakes,
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
            **zone,
        },
        utm_epsg=part.epsg,  # CRS of the footprint and of the lakes' outlines
        supersede=ctx.supersede,
    )
    merge = merge_task(db, result, ctx.merge_config)
    return SceneOutcome(plan.s2.product_id, "processed", None, merge, part=_part_name(ctx, part))


def _zone_inputs(plan: ScenePlan, part: ZonePart, others: int, cut: int) -> dict[str, str]:
    """The zone part of a scene of an AOI across zones, for its inputs; logs lakes cut at a seam."""
    if cut:
        get_run_logger().warning(
            "%s in %s: %d lake(s) reach beyond the zone margin and are cut by the grid edge: not recorded",
            plan.scene_id,
            part.label,
            cut,
        )
    return {"zone_part": part.label, "zone_lakes_other_part": str(others), "zone_lakes_cut": str(cut)}


def _part_name(ctx: SceneContext, part: ZonePart) -> str | None:
    """How the report names the part: None for an AOI in one zone (one scene per acquisition)."""
    return None if ctx.partition.single else part.label


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


def _run_part(
    plan: ScenePlan,
    part: ZonePart,
    ctx: SceneContext,
    key: str,
    done: set[str],
    rerun: bool,
    conflict: str | None,
    db: SecretStr,
) -> SceneOutcome:
    """One scene of ``plan`` in ``part``: skipped, refused, processed or failed (never raises)."""
    logger = get_run_logger()
    name = _part_name(ctx, part)
    where = plan.scene_id if name is None else f"{plan.scene_id} in {name}"
    if key in done and not rerun:
        return SceneOutcome(plan.scene_id, "skipped", "already processed", part=name)
    if not ctx.partition.single and not part.reached_by(plan.s2.footprint):
        return SceneOutcome(plan.scene_id, "skipped", "S2 footprint does not reach this UTM zone part", part=name)
    if conflict is not None:
        reason = f"ParameterMismatchError: {conflict}"
        logger.error("%s refused: %s", where, reason)
        return SceneOutcome(plan.scene_id, "failed", reason, part=name)
    try:
        return process_scene(plan, ctx, part, key, db)
    except Exception as exc:  # one failed scene never aborts the others
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        logger.error("%s failed: %s", where, reason)
        return SceneOutcome(plan.scene_id, "failed", reason, part=name)


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
    for i, plan in enumerate(plans, 1):
        logger.info("[%d/%d] %s", i, len(plans), plan.scene_id)
        scenes = [
            _run_part(plan, part, ctx, keys[(plan.scene_id, part.epsg)], done, rerun, conflict, db)
            for part in partition.parts
        ]
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
