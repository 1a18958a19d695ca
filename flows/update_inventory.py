"""``update_inventory``: the scheduled flow. Search → pair → per scene: stack → segment → lakes → merge.

A scene is one S2 acquisition in one UTM zone part of the AOI: one per acquisition for an AOI
within one zone, one per part the acquisition reaches for an AOI across zones (:mod:`tasks.zones`).

One failed scene never aborts the others; the run ends with a report (Prefect artifacts and a
``RunReport`` return value). Settings (database, data root) are read here, at the edge: the
database URL is never a flow parameter, so it is never stored or shown by the Prefect API.
"""

import hashlib
import math
import re
import time
from dataclasses import dataclass
from datetime import date
from typing import Annotated

import geopandas as gpd
from prefect import flow, get_run_logger
from prefect.context import get_run_context
from prefect.futures import PrefectFuture
from pydantic import Field, SecretStr
from sqlalchemy import Engine

from core.errors import interrupted
from core.progress import report_progress
from db.ledger import (
    AcquisitionRow,
    committed_params,
    lake_changes_of_scenes,
    params_conflict,
    quarantined_scenes,
    record_acquisitions,
    scene_keys_for_aoi,
    set_acquisition_status,
)
from db.merge import ensure_aoi
from db.records import MergeConfig
from db.runs import start_run
from flows.aoi import AoiSpec
from flows.database import ready_engine
from flows.outcomes import Disposition, classify, describe, final_state, run_status
from flows.report import LakeChange, RunReport, SceneOutcome
from flows.report_artifacts import publish_report
from flows.retention import prune_stacks
from flows.runner import scene_task_runner
from flows.scene import SceneContext, part_name
from flows.settings import Settings, load_settings
from flows.tasks import process_scene_task, search_task
from flows.window import DEFAULT_DAYS, MAX_DAYS, rolling_window
from models.registry import load_segmenter
from tasks.acquisition import ledger_href, redact_urls
from tasks.grid import utm_epsg_for
from tasks.pairing import ScenePlan, pair_scenes, params_hash
from tasks.sources import Acquisition
from tasks.zones import ZonePart, partition_aoi


def _scene_id(plan: ScenePlan, part: ZonePart) -> str:
    """One scene of the run: an S2 acquisition in one zone part (the ledger's per-AOI key lookup)."""
    return f"{plan.scene_id}|{part.epsg}"


def _decide(
    plan: ScenePlan,
    part: ZonePart,
    ctx: SceneContext,
    done: set[str],
    rerun: bool,
    conflict: str | None,
    quarantined: str | None,
) -> SceneOutcome | None:
    """The outcome of ``plan`` in ``part`` decided without computing it (skipped, refused); None: compute it.

    ``quarantined``: the reason recorded when this scene, with these very inputs, failed on a bad
    input in an earlier run (None: it did not). It would fail the same way: skipped, naming the
    reason, until the input is replaced (a new key) or a rerun asks for it.
    """
    name = part_name(ctx, part)
    if _scene_id(plan, part) in done and not rerun:
        return SceneOutcome(plan.scene_id, "skipped", "already processed", part=name)
    if quarantined is not None and not rerun:
        reason = f"quarantined, input unchanged (replace it, or rerun): {quarantined}"
        return SceneOutcome(plan.scene_id, "skipped", reason[:500], part=name)
    if not ctx.partition.single and not part.reached_by(plan.s2.footprint):
        return SceneOutcome(plan.scene_id, "skipped", "S2 footprint does not reach this UTM zone part", part=name)
    if conflict is not None:
        reason = f"ParameterMismatchError: {conflict}"
        get_run_logger().error("%s refused: %s", _where(plan, name), reason)
        return SceneOutcome(plan.scene_id, "failed", reason, part=name, disposition=Disposition.FAIL.value)
    return None


def _resolved(plan: ScenePlan, name: str | None, future: PrefectFuture[SceneOutcome]) -> SceneOutcome:
    """The submitted scene's outcome by the policy (:mod:`flows.outcomes`); never raises for the scene's own errors."""
    try:
        return future.result()
    except Exception as exc:  # one failed scene never aborts the others
        if interrupted(exc):  # a signal (SIGTERM, Ctrl-C) that a library turned into its error ends the run
            raise
        disposition = classify(exc)
        reason = describe(exc)
        word = "quarantined" if disposition is Disposition.QUARANTINE else "failed"
        get_run_logger().error("%s %s (%s): %s", _where(plan, name), word, disposition.value, reason)
        return SceneOutcome(plan.scene_id, "failed", reason, part=name, disposition=disposition.value)


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
    scenes: list[str] | None = None,
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
        scenes: only these S2 product ids of the window (``process_scene``, a rerun of one
            scene); default: every S2 acquisition found. An id the search does not find is
            reported as skipped, never silently dropped.
    """
    logger = get_run_logger()
    settings = load_settings()
    engine = ready_engine(settings)
    window = rolling_window(engine, aoi.name, start, end, days)
    start, end = window.start, window.end
    logger.info("%s: sensing window %s", aoi.name, window.describe())
    db = SecretStr(str(engine.url.render_as_string(hide_password=False)))
    model_spec = model or settings.model
    segmenter = load_segmenter(model_spec, settings.tta, settings.hub, settings.inference_runtime)
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
        runtime=settings.inference_runtime,
        threshold=settings.threshold,
        min_area_m2=settings.min_area_m2,
        merge_config=MergeConfig(),
        supersede=supersede,
    )
    # The AOI's stated CRS stays its centroid's zone (the merge measures overlaps there); each
    # scene states its own part's zone.
    epsg = utm_epsg_for(aoi.shape.centroid.x, aoi.shape.centroid.y)
    aoi_id = ensure_aoi(engine, aoi.name, aoi.shape, epsg)
    run_key = hashlib.sha256(f"{aoi.name}|{start}|{end}|{source}|{segmenter.version}".encode()).hexdigest()
    flow_run_id = str(get_run_context().flow_run.id)  # type: ignore[union-attr]
    shown = public_source(source)
    request = {
        "start": str(start),
        "end": str(end),
        "source": shown,
        "model": segmenter.version,
        "rerun": rerun,
        "supersede": supersede,
    }
    if scenes is not None:
        request["scenes"] = sorted(scenes)
    only = None if scenes is None else frozenset(scenes)
    run = _Run(aoi, aoi_id, start, end, source, rerun, supersede, ctx, db, epsg, flow_run_id, only)
    # The row is closed in every outcome: finished below, closed 'failed' by the lease on an
    # exception, closed 'crashed' by the next run's start when this process dies (db.runs).
    with start_run(engine, run_key, aoi_id, flow_run_id, request) as lease:
        report = _update(run, settings, engine)
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
    supersede: bool
    ctx: SceneContext
    db: SecretStr
    epsg: int
    flow_run_id: str
    only: frozenset[str] | None = None
    """The S2 product ids asked for (``scenes``); None: all."""


def _update(run: _Run, settings: Settings, engine: Engine) -> RunReport:
    """Search, pair, process every scene by the outcome policy, publish the report."""
    logger = get_run_logger()
    aoi, aoi_id, ctx, partition = run.aoi, run.aoi_id, run.ctx, run.ctx.partition
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # S1 and DEM are searched over the window widened by the pairing tolerance, S2 inside it.
    acquisitions = search_task(run.source, aoi, run.start, run.end, settings.stac_options, settings.max_pair_days)
    t1 = time.perf_counter()
    outcomes: list[SceneOutcome] = []
    if run.only is not None:  # one scene (or a few): the others of the window are not this run's
        found = {a.product_id for a in acquisitions if a.kind == "S2L2A"}
        outcomes += [SceneOutcome(p, "skipped", "asked for, not found in the window") for p in sorted(run.only - found)]
        acquisitions = [a for a in acquisitions if a.kind != "S2L2A" or a.product_id in run.only]
    record_acquisitions(engine, aoi_id, _acquisition_rows(acquisitions))
    plans, skipped = pair_scenes(acquisitions, aoi.shape, settings.max_pair_days)
    timings.update(search=t1 - t0, pair=time.perf_counter() - t1)
    outcomes += [SceneOutcome(s.product_id, "skipped", s.reason) for s in skipped]
    for s in skipped:
        set_acquisition_status(engine, aoi_id, [s.product_id], "skipped", s.reason)

    # Per AOI: the key names the AOI; a scene merged before keys did keeps its key (db.ledger).
    candidates = {
        _scene_id(p, part): (ctx.scene_key(p, part, aoi.name), ctx.scene_key(p, part))
        for p in plans
        for part in partition.parts
    }
    keys, done = scene_keys_for_aoi(engine, aoi_id, candidates)
    quarantined = quarantined_scenes(engine, aoi_id, list(keys.values()))
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
        if run.supersede
        else params_conflict(committed_params(engine, aoi_id), params_hash(ctx.params), ctx.stated_params)
    )
    # Every scene is decided, then submitted to the run's task runner (flows.runner: one after
    # another by default, spread over a Dask cluster on request); outcomes are read in plan order.
    pending: list[tuple[ScenePlan, list[SceneOutcome | tuple[str | None, PrefectFuture[SceneOutcome]]]]] = []
    for i, plan in enumerate(plans, 1):
        logger.info("[%d/%d] %s", i, len(plans), plan.scene_id)
        per_part: list[SceneOutcome | tuple[str | None, PrefectFuture[SceneOutcome]]] = []
        for part in partition.parts:
            key = keys[_scene_id(plan, part)]
            decided = _decide(plan, part, ctx, done, run.rerun, conflict, quarantined.get(key))
            if decided is None:
                per_part.append((part_name(ctx, part), process_scene_task.submit(plan, ctx, part, key, run.db)))
            else:
                per_part.append(decided)
        pending.append((plan, per_part))
    landed: list[str] = []
    for i, (plan, per_part) in enumerate(pending, 1):
        scenes = [o if isinstance(o, SceneOutcome) else _resolved(plan, *o) for o in per_part]
        outcomes += scenes
        landed += [keys[_scene_id(plan, part)] for part, o in zip(partition.parts, scenes, strict=True) if o.merge]
        bad = [keys[_scene_id(plan, part)] for part, o in zip(partition.parts, scenes, strict=True) if o.quarantined]
        ids, status, reason = _ledger_status(plan, scenes)
        set_acquisition_status(
            engine, aoi_id, ids, status, reason, quarantined_keys=bad if status == "quarantined" else ()
        )
        report_progress(f"{aoi.name}: scenes", i, len(pending), f"{plan.scene_id} {_word(scenes)}")

    merged = [ctx.scene_dir(keys[sid]) for sid in done] + [ctx.scene_dir(k) for k in landed]
    prune_stacks(ctx.data_dir / "scenes", merged, settings.keep_stacks)  # flows.retention: after the merges
    t2 = time.perf_counter()
    for stage in ("stack", "segment", "extract", "merge"):
        timings[stage] = sum(o.timings.get(stage, 0.0) for o in outcomes)
    changes = lake_changes_of_scenes(engine, landed)
    report = RunReport(
        aoi=aoi.name,
        model=ctx.model_version,
        found=n_s2,
        outcomes=tuple(outcomes),
        zone_parts=() if partition.single else tuple(p.label for p in partition.parts),
        changes=tuple(_lake_changes(changes)),
        timings=timings,
        flow_run_id=run.flow_run_id,
    )
    png = ctx.data_dir / "reports" / f"{run.flow_run_id}.png"
    publish_report(report, aoi.shape, changes, run.epsg, png)
    timings["report"] = time.perf_counter() - t2  # the same dict: the returned report shows it too
    return report


def _word(scenes: list[SceneOutcome]) -> str:
    return "/".join(sorted({o.status for o in scenes}))


def _ledger_status(plan: ScenePlan, scenes: list[SceneOutcome]) -> tuple[list[str], str, str | None]:
    """Which acquisitions the acquisition's scenes (one per zone part) mark, with which status and reason.

    Failed if any scene failed (quarantined when every failure was a bad input; the reason names
    the part), processed if any landed; a scene read "already processed" leaves the earlier outcome.
    """
    failed = [o for o in scenes if o.status == "failed"]
    if failed:
        reason = "; ".join(f"{o.part}: {o.reason}" if o.part else str(o.reason) for o in failed)[:500]
        return [plan.s2.product_id], "quarantined" if all(o.quarantined for o in failed) else "failed", reason
    if any(o.status == "processed" for o in scenes):
        return [plan.s2.product_id, plan.s1.product_id], "processed", None
    return [], "skipped", None


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


_USERINFO = re.compile(r"(://)[^/@\s]+@")


def public_source(source: str) -> str:
    """``source`` as it may be stored and shown: URL query strings and ``user:password@`` removed."""
    return redact_urls(_USERINFO.sub(r"\1…@", source))
