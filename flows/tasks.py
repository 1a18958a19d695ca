"""Every Prefect task of the project, on one page, with its retry and caching policy and the reason.

The stages themselves are plain functions in ``tasks`` (and ``db.merge``, ``demo``): Prefect-free,
testable without a server. Here each gets its ``@task`` wrapper, whose decorator carries the
policy and, beside it, why. A new task goes on this page (``tests/unit/test_tasks_layer.py``
checks that ``@task`` appears nowhere else and that ``tasks`` never imports Prefect).

Caching: every pipeline task has ``cache_policy=NO_CACHE``. Inputs are local files and rows of
the inventory that change under the same arguments, and the scene ledger (``db.ledger``) is the
project's one record of what was done: a Prefect result cache would be a second, stale one.

May import: ``tasks``, ``db``, ``models``, ``demo``, ``core``, ``flows`` leaves (``flows.aoi``,
``flows.scene``, ``flows.report``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr
from sqlalchemy import Engine

from db.engine import make_engine
from db.merge import merge_scene
from db.records import MergeConfig, MergeReport, SceneResult
from flows.aoi import AoiSpec
from flows.outcomes import RETRY_JITTER_FACTOR, retry_condition, retry_delays
from flows.report import SceneOutcome
from flows.scene import SceneContext, observation_inputs, part_name, scene_result
from flows.settings import load_settings
from models.hub import DEFAULT_HUB, HubCache
from models.runtime import DEFAULT_RUNTIME, InferenceRuntime
from tasks.defaults import MAX_PAIR_DAYS
from tasks.dhus import fetch_dhus
from tasks.grid import GridSpec
from tasks.pairing import ScenePlan
from tasks.remote_read import use_s3_access
from tasks.scene import ExtractedLakes, extract_lakes, prepare_stack
from tasks.search_window import search_for_pairing
from tasks.segment import segment_stack
from tasks.signing import refresh_signatures
from tasks.sources import Acquisition, StacApiOptions, source_from_uri
from tasks.stack import StackInfo
from tasks.zones import ZonePart

if TYPE_CHECKING:
    from demo.synthetic import DemoCatalog

__all__ = [
    "KINDS",
    "engine_for",
    "extract_lakes_task",
    "generate_demo_catalog_task",
    "merge_task",
    "prepare_stack_task",
    "process_scene_task",
    "search_task",
    "segment_task",
]

KINDS = ("S2L2A", "S1GRD", "S1RTC", "DEM")
"""Acquisition kinds the update flow searches for."""


# Retries follow the outcome policy (flows.outcomes): only errors it calls transient are retried,
# with exponential back-off and jitter; every other error is reported at once with its reason.


@task(
    name="search-acquisitions",
    cache_policy=NO_CACHE,
    # Retried: remote catalogs answer 429/5xx now and then; the back-off gives them time. A bad
    # catalog (SourceError, any InputError) fails the same way again, and a server that accepted
    # and never answered within the read timeout is not retried either (a plain timeout): the run
    # fails within a minute with the reason, and the next scheduled run tries again.
    retries=3,
    retry_delay_seconds=retry_delays(3.0),
    retry_jitter_factor=RETRY_JITTER_FACTOR,
    retry_condition_fn=retry_condition,
    # A search of one AOI is a few paged requests, each bounded by REMOTE_TIMEOUT_S; ten minutes
    # means a catalog that trickles pages forever, not a slow one.
    timeout_seconds=600,
)
def search_task(
    source: str,
    aoi: AoiSpec,
    start: date,
    end: date,
    options: StacApiOptions | None = None,
    max_pair_days: float = MAX_PAIR_DAYS,
) -> list[Acquisition]:
    """Lists the S2 acquisitions of ``aoi`` sensed in [start, end] (UTC days) from ``source``.

    Their partners (S1, DEM) are searched over that window widened by ``max_pair_days`` on each side.
    """
    # No separate check: the search walks and vets the same catalog (the CLI checked it already).
    # DHuS credentials are read here, inside the task: never a parameter Prefect stores or shows.
    found = source_from_uri(source, check=False, options=options, dhus=load_settings().dhus_options(source))
    return search_for_pairing(found, aoi.shape, start, end, KINDS, max_pair_days)


@task(
    name="prepare-stack",
    cache_policy=NO_CACHE,
    # Retried only when a remote read failed (RemoteReadError: timeout, HTTP error); a local file
    # that fails to read is corrupt or truncated, permanent: quarantined (flows.outcomes).
    # An hour: a full 110 km tile warps in minutes; remote reads have per-request timeouts, so
    # only a pathological source (a trickling server) reaches this.
    timeout_seconds=3600,
    retries=2,
    retry_delay_seconds=retry_delays(10.0, 2),
    retry_jitter_factor=RETRY_JITTER_FACTOR,
    retry_condition_fn=retry_condition,
)
def prepare_stack_task(plan: ScenePlan, grid: GridSpec, out_dir: Path) -> StackInfo:
    """Prefect wrapper of :func:`tasks.scene.prepare_stack`.

    S3 credentials are read from the settings here, inside the task, and handed to GDAL only for
    the reads: never a parameter, so Prefect never stores or shows them. Signed hrefs are signed
    again first when their token nears expiry (a long run outlives its search's tokens). Products
    of a DHuS hub are downloaded into the data root first (:func:`tasks.dhus.fetch_dhus`; a
    corrupt one raises an InputError: the scene is quarantined).
    """
    settings = load_settings()
    dhus = settings.dhus_options(plan.s2.source)
    if dhus is not None:
        plan = replace(plan, s2=fetch_dhus(plan.s2, dhus), s1=fetch_dhus(plan.s1, dhus))
    plan = replace(
        plan,
        s2=refresh_signatures(plan.s2),
        s1=refresh_signatures(plan.s1),
        dems=tuple(refresh_signatures(d) for d in plan.dems),
    )
    with use_s3_access(settings.s3_access):
        return prepare_stack(plan, grid, out_dir)


@task(
    name="segment",
    cache_policy=NO_CACHE,
    # Not retried: a model that fails on a stack fails the same way again (small in, a path out).
    # Two hours: TerraMind with test-time augmentation on CPU over a full tile is the slow case.
    timeout_seconds=7200,
)
def segment_task(
    stack_info: StackInfo,
    model_spec: str,
    out_path: Path,
    tta: bool = True,
    hub: HubCache = DEFAULT_HUB,
    runtime: InferenceRuntime = DEFAULT_RUNTIME,
) -> Path:
    """Prefect wrapper of :func:`tasks.segment.segment_stack`."""
    return segment_stack(stack_info, model_spec, out_path, tta, hub, runtime)


@task(
    name="extract-lakes",
    cache_policy=NO_CACHE,
    # Not retried: pure computation on files this run wrote; a failure is a bug or a bad file.
    # An hour: vectorising and attributing a full tile takes minutes.
    timeout_seconds=3600,
)
def extract_lakes_task(
    stack_info: StackInfo, probability_path: Path, threshold: float, min_area_m2: float
) -> ExtractedLakes:
    """Prefect wrapper of :func:`tasks.scene.extract_lakes`."""
    return extract_lakes(stack_info, probability_path, threshold, min_area_m2)


@lru_cache(maxsize=4)
def engine_for(url: str) -> Engine:
    """One pooled engine per database per process (tasks get the URL, never an engine: engines don't pickle)."""
    return make_engine(url)


@task(
    name="merge-into-inventory",
    cache_policy=NO_CACHE,
    # Connection losses are worth a retry: the merge is one transaction and its ledger key makes
    # a retry after a commit a no-op. Anything else (a bad record) fails the same way twice.
    retries=3,
    retry_delay_seconds=retry_delays(2.0),
    retry_jitter_factor=RETRY_JITTER_FACTOR,
    retry_condition_fn=retry_condition,
    # Thirty minutes per attempt: the largest merges measured take seconds to a minute; a merge
    # stuck longer waits on a lock or a dead server, and its transaction rolls back on timeout.
    timeout_seconds=1800,
)
def merge_task(database_url: SecretStr, result: SceneResult, config: MergeConfig) -> MergeReport:
    """Merges one scene (:func:`db.merge.merge_scene`).

    The URL travels as a SecretStr, so Prefect never shows or persists it.
    """
    return merge_scene(engine_for(database_url.get_secret_value()), result, config)


@task(
    name="process-scene",
    cache_policy=NO_CACHE,
    # Not retried as a whole: each stage inside carries its own policy (the merge retries a lost
    # connection; the rest fail the same way again). No timeout of its own: each stage has one.
    # This is the unit a task runner spreads: one scene per worker slot (flows.runner).
)
def process_scene_task(plan: ScenePlan, ctx: SceneContext, part: ZonePart, key: str, db: SecretStr) -> SceneOutcome:
    """One scene (one S2 acquisition in one UTM zone part) from files to merge; raises on failure.

    Stack → segment → lakes → merge. Every argument pickles, so a Dask worker in another process
    or host can run it: the plan, context and part are frozen dataclasses of paths and numbers,
    and the database travels as its URL in a SecretStr (the worker opens its own engine,
    :func:`engine_for`). The merge takes the AOI's and the ground's advisory locks
    (:mod:`db.merge.locks`), so merges from several workers still queue one after another.
    """
    scene_dir = ctx.scene_dir(key)
    t0 = time.perf_counter()
    stack = prepare_stack_task(plan, part.grid, scene_dir)
    observation = observation_inputs(plan, stack)  # before segmentation: a stack without its record is a bug
    t1 = time.perf_counter()
    probability = segment_task(stack, ctx.model, scene_dir / "probability.tif", ctx.tta, ctx.hub, ctx.runtime)
    t2 = time.perf_counter()
    extracted = extract_lakes_task(stack, probability, ctx.threshold, ctx.min_area_m2)
    t3 = time.perf_counter()
    result = scene_result(plan, ctx, part, key, stack, probability, extracted, observation)
    merge = merge_task(db, result, ctx.merge_config)
    timings = {"stack": t1 - t0, "segment": t2 - t1, "extract": t3 - t2, "merge": time.perf_counter() - t3}
    return SceneOutcome(
        plan.s2.product_id,
        "processed",
        None,
        merge,
        part=part_name(ctx, part),
        cloud_fraction=result.cloud_fraction,
        timings=timings,
    )


@task(
    name="generate-demo-catalog",
    # Not retried, default caching: the generator is deterministic, rerunning rewrites the same bytes.
    # Ten minutes: the largest demo size generates in well under one.
    timeout_seconds=600,
)
def generate_demo_catalog_task(
    root: str, size_px: int = 512, seed: int = 0, aoi_name: str = "demo-tienshan"
) -> DemoCatalog:
    """Prefect wrapper of :func:`demo.synthetic.generate_demo_catalog`."""
    # Imported here: the update flow imports this page and has no use for the demo generator.
    from demo.synthetic import generate_demo_catalog

    return generate_demo_catalog(Path(root), size_px=size_px, seed=seed, aoi_name=aoi_name)
