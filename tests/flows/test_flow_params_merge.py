"""The merge's own parameter check (under the AOI lock), and the ledger key's input fingerprints.

The flow refuses a changed parameter set before computing anything; the merge refuses it again
inside its transaction, so a caller that skips the flow's check (or races it) cannot mix two
thresholds in one AOI. Scenes that state no parameters (imported inventories) are not checked.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from db.ledger import PARAMS_INPUT, ParameterMismatchError
from db.merge import ensure_aoi, merge_scene
from db.records import SceneResult
from tasks.pairing import pair_scenes, scene_key
from tasks.sources import Acquisition
from tests.helpers.scenes import UTM, disc, footprint, scene

pytestmark = [pytest.mark.db]

AOI = "params-aoi"


def _stating(key: str, days: float, threshold: float) -> SceneResult:
    params = {"grid": [UTM, 10.0], "min_area_m2": 5000.0, "threshold": threshold}
    base = scene(key, days, [disc(0, 0, 200)], aoi=AOI)
    return replace(
        base,
        params_hash=f"h{threshold:g}",
        inputs={**base.inputs, PARAMS_INPUT: json.dumps(params, sort_keys=True)},
    )


def _scenes(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM inventory.scene")).scalar_one())


def test_merge_refuses_a_scene_with_other_parameters(engine: Engine) -> None:
    ensure_aoi(engine, AOI, footprint(-6_000, -6_000, 6_000, 6_000), UTM)
    assert not merge_scene(engine, _stating("a", 0, 0.5)).noop
    assert not merge_scene(engine, _stating("b", 10, 0.5)).noop
    with pytest.raises(ParameterMismatchError) as err:
        merge_scene(engine, _stating("c", 20, 0.9))
    message = str(err.value)
    assert "h0.9" in message and "h0.5" in message and "threshold 0.5 → 0.9" in message, message
    assert _scenes(engine) == 2, "the refused scene left nothing behind"
    # A scene that states no parameters (an imported inventory) is neither checked nor checked against.
    assert not merge_scene(engine, scene("import", 30, [disc(0, 0, 200)], aoi=AOI)).noop


def _acq(pid: str, kind: str, fingerprint: str) -> Acquisition:
    when = datetime(2024, 7, 4, tzinfo=UTC)
    return Acquisition(pid, kind, "x", when, None, (("data", f"/{pid}.tif"),), "local:test", fingerprint=fingerprint)


def test_scene_key_covers_what_the_inputs_are() -> None:
    """A fixed file (new size / mtime) makes a new key; the same file the same key."""
    from shapely.geometry import box

    aoi = box(0, 0, 1, 1)
    (plan,), _ = pair_scenes([_acq("S2", "S2L2A", "a"), _acq("S1", "S1GRD", "b"), _acq("DEM", "DEM", "c")], aoi)
    (same,), _ = pair_scenes([_acq("S2", "S2L2A", "a"), _acq("S1", "S1GRD", "b"), _acq("DEM", "DEM", "c")], aoi)
    (fixed,), _ = pair_scenes([_acq("S2", "S2L2A", "a"), _acq("S1", "S1GRD", "b"), _acq("DEM", "DEM", "c2")], aoi)
    params = {"threshold": 0.5}
    assert scene_key(plan, "m", params) == scene_key(same, "m", params)
    assert scene_key(plan, "m", params) != scene_key(fixed, "m", params)
