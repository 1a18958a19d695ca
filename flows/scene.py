"""One scene's shared context and its merge record: what ``process_scene_task`` needs besides the stages.

Kept apart from the flow so that the scene's task (``flows.tasks.process_scene_task``) can use it
without importing the flow module back. Everything here pickles (frozen dataclasses of paths,
numbers and strings): a task runner may send it to another process (Dask workers).

May import: ``tasks``, ``db``, ``models``, ``core``, ``flows.report``.
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
from tasks.grid import GridSpec
from tasks.pairing import ScenePlan, params_hash
from tasks.scene import ExtractedLakes
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

    def scene_dir(self, key: str) -> Path:
        """The scene's folder under the AOI's data root (stack and probability COGs)."""
        return self.data_dir / "scenes" / key[:16]


def scene_result(
    plan: ScenePlan,
    ctx: SceneContext,
    key: str,
    stack: StackInfo,
    probability: Path,
    extracted: ExtractedLakes,
    observation: dict[str, str],
) -> SceneResult:
    """The scene's record for the merge: its lakes (CRS ``ctx.grid.epsg``), footprint and inputs.

    ``observation`` is :func:`observation_inputs` of the stack, taken before segmentation.
    """
    return SceneResult(
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
