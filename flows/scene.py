"""One scene's shared context and its merge record: what ``process_scene_task`` needs besides the stages.

Kept apart from the flow so that the scene's task (``flows.tasks.process_scene_task``) can use it
without importing the flow module back. Everything here pickles (frozen dataclasses of paths,
numbers and strings): a task runner may send it to another process (Dask workers). A scene is one
S2 acquisition in one UTM zone part of the AOI (:mod:`tasks.zones`).

May import: ``tasks``, ``db``, ``models``, ``core``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger

from db.ledger import PARAMS_INPUT
from db.records import MergeConfig, SceneResult
from models.hub import HubCache
from models.runtime import DEFAULT_RUNTIME, InferenceRuntime
from tasks.pairing import ScenePlan, params_hash, scene_key
from tasks.scene import ExtractedLakes
from tasks.stack import StackInfo
from tasks.validity import cloud_state_of
from tasks.zones import ZonePart, ZonePartition, restrict_to_part


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
    runtime: InferenceRuntime = DEFAULT_RUNTIME
    """What runs the TerraMind forward (ONNX Runtime or torch) and where exported graphs are cached."""

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

    def scene_dir(self, key: str) -> Path:
        """The scene's folder under the AOI's data root (stack and probability COGs)."""
        return self.data_dir / "scenes" / key[:16]

    def scene_key(self, plan: ScenePlan, part: ZonePart, aoi: str | None = None) -> str:
        """Ledger key of ``plan`` in ``part`` (:func:`tasks.pairing.scene_key`).

        The part is in it when the AOI has several; the AOI's name when ``aoi`` is given.
        """
        return scene_key(plan, self.model_version, self.partition.key_params(self.params, part), aoi)

    @property
    def stated_params(self) -> dict[str, object]:
        """:attr:`params` as stored with each scene (sorted-key JSON, read back): the form compared."""
        stated: dict[str, object] = json.loads(json.dumps(self.params, sort_keys=True, default=str))
        return stated


def scene_result(
    plan: ScenePlan,
    ctx: SceneContext,
    part: ZonePart,
    key: str,
    stack: StackInfo,
    probability: Path,
    extracted: ExtractedLakes,
    observation: dict[str, str],
) -> SceneResult:
    """The scene's record for the merge: the lakes ``part`` decides, the ground it may mark absent.

    Outlines and footprint in ``part.epsg``; ``observation`` is :func:`observation_inputs` of the stack.
    """
    # The lakes this part decides and the ground it may mark absent (all of both for one part).
    mine = restrict_to_part(extracted.lakes, extracted.footprint, part, ctx.partition)
    zone = {} if ctx.partition.single else zone_inputs(plan, part, mine.others, mine.cut)
    return SceneResult(
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
            **dict(stack.quality),  # how S1 was read; the measured co-registration of S1 and the DEM
            PARAMS_INPUT: json.dumps(ctx.stated_params, sort_keys=True),
            **observation,
            **zone,
        },
        utm_epsg=part.epsg,  # CRS of the footprint and of the lakes' outlines
        supersede=ctx.supersede,
    )


def zone_inputs(plan: ScenePlan, part: ZonePart, others: int, cut: int) -> dict[str, str]:
    """The zone part of a scene of an AOI across zones, for its inputs; logs lakes cut at a seam."""
    if cut:
        get_run_logger().warning(
            "%s in %s: %d lake(s) reach beyond the zone margin and are cut by the grid edge: not recorded",
            plan.scene_id,
            part.label,
            cut,
        )
    return {"zone_part": part.label, "zone_lakes_other_part": str(others), "zone_lakes_cut": str(cut)}


def part_name(ctx: SceneContext, part: ZonePart) -> str | None:
    """How the report names the part: None for an AOI in one zone (one scene per acquisition)."""
    return None if ctx.partition.single else part.label


def observation_inputs(plan: ScenePlan, stack: StackInfo) -> dict[str, str]:
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
