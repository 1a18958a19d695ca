"""The ``process_scene`` flow: one S2 acquisition of an AOI of the inventory, through every stage.

For a manual look at one scene, and the unit of ``glacial-lakes rerun --scene``: the scene is
found in the AOI's ledger (which AOI found it, on which day), searched again in ``source`` on
that day only, and processed like any scene of :func:`flows.update_inventory.update_inventory`
(same outcome policy, ledger and report). No ``from __future__ import annotations`` here:
Prefect builds the parameter model of a served flow from these annotations.
"""

from datetime import UTC

from prefect import flow

from db.ledger import scene_day
from db.queries import aoi_geometry
from flows.aoi import AoiSpec
from flows.database import ready_engine
from flows.outcomes import final_state, report_of
from flows.report import RunReport
from flows.settings import load_settings
from flows.update_inventory import update_inventory


@flow(name="process-scene", log_prints=False)
def process_scene(
    scene: str, source: str, aoi: str | None = None, model: str | None = None, supersede: bool = False
) -> RunReport:
    """Process S2 acquisition ``scene`` (its product id) again, from the source's files to the merge.

    Args:
        scene: the S2 product id, as the ledger (``inventory.acquisition``) and ``glacial-lakes
            runs`` show it.
        source: ``local:DIR`` or ``stac:URL`` holding the scene's files.
        aoi: the AOI it belongs to; default: the one AOI that found it (several: refused).
        model: segmenter spec; default from ``GLACIAL_LAKES_MODEL``.
        supersede: the new results replace the AOI's earlier ones of this product (a rerun with
            another model or parameters); without it a scene already merged with the same inputs,
            model and parameters is a no-op.
    """
    engine = ready_engine(load_settings())
    name, sensed = scene_day(engine, scene, aoi)
    spec = AoiSpec(name=name, geometry=aoi_geometry(engine, name))
    day = sensed.astimezone(UTC).date()  # the search window is whole UTC days
    state = update_inventory(
        aoi=spec,
        start=day,
        end=day,
        source=source,
        model=model,
        rerun=True,
        supersede=supersede,
        scenes=[scene],
        return_state=True,
    )
    return final_state(report_of(state))  # type: ignore[return-value]
