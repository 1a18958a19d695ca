"""The ``rerun`` flow: process an AOI's window again, and let the new results supersede the old.

For a new model, new parameters or fixed inputs: every S2 acquisition of the window is processed
again (scene keys already committed included) and each new scene supersedes the AOI's earlier
scenes of the same product (:mod:`db.merge.supersede`): histories are derived again from the
current observations, a lake only the old results saw leaves the inventory (status
``superseded``), and the old observations stay, in ``inventory.superseded_observations``.

The AOI is one the inventory holds (its outline is read from it). No ``from __future__ import
annotations`` here: Prefect builds the parameter model of a served flow from these annotations.
"""

from datetime import date

from prefect import flow

from core.errors import AoiError
from db.queries import aoi_geometry
from flows.aoi import AoiSpec
from flows.database import ready_engine
from flows.outcomes import final_state, report_of
from flows.process_scene import process_scene
from flows.report import RunReport
from flows.settings import load_settings
from flows.update_inventory import update_inventory


@flow(name="rerun", log_prints=False)
def rerun(
    aoi: str | None,
    start: date | None,
    end: date | None,
    source: str,
    model: str | None = None,
    scene: str | None = None,
) -> RunReport:
    """Process AOI ``aoi``'s acquisitions sensed in [start, end] (or one scene) again; the results supersede the old.

    Args:
        aoi: name of an AOI of the inventory (with ``scene``: optional, the one AOI that found it).
        start: first sensing day, inclusive (UTC); not with ``scene``.
        end: last sensing day, inclusive (UTC); not with ``scene``.
        source: ``local:DIR`` or ``stac:URL``.
        model: segmenter spec; default from ``GLACIAL_LAKES_MODEL``.
        scene: one S2 product id instead of a window (:func:`flows.process_scene.process_scene`).
    """
    if scene is not None:
        if start is not None or end is not None:
            raise AoiError("rerun: give a scene or a window (start, end), not both")
        one = process_scene(scene=scene, source=source, aoi=aoi, model=model, supersede=True, return_state=True)
        return final_state(report_of(one))  # type: ignore[return-value]
    if aoi is None or start is None or end is None:
        raise AoiError("rerun: give an AOI with a window (start, end), or a scene")
    spec = AoiSpec(name=aoi, geometry=aoi_geometry(ready_engine(load_settings()), aoi))
    state = update_inventory(
        aoi=spec, start=start, end=end, source=source, model=model, rerun=True, supersede=True, return_state=True
    )
    # The update's final state is the rerun's (Completed, or Failed / Partial with its report).
    return final_state(report_of(state))  # type: ignore[return-value]
