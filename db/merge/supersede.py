"""Reruns: a scene that supersedes the AOI's earlier scenes of the same Sentinel-2 product.

A rerun processes an acquisition again (another model, other parameters, fixed inputs); its scene
has its own ledger key. :func:`supersede` marks the AOI's other current scenes of that S2 product
as superseded by it (``scene.superseded_by``, ``superseded_at``) and returns the lakes they had
observed, row-locked, with their status: the merge derives their histories again, from the live
observations only (:func:`db.merge.rebuild.load`), so the old results no longer count and nothing
is deleted. A lake only superseded scenes saw leaves the inventory (status ``superseded``; no
version) but keeps its observations, which the ``superseded_observations`` view lists.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from db.schema import SCHEMA

_MARK = text(
    f"UPDATE {SCHEMA}.scene SET superseded_by = :new, superseded_at = now() "
    "WHERE aoi_id = :aoi AND s2_product_id = :s2 AND scene_id <> :new AND superseded_by IS NULL "
    "AND (inputs ->> 'zone_part') IS NOT DISTINCT FROM CAST(:part AS text) "
    "RETURNING scene_id"
)
# In lake-id order, as the candidates are locked: two merges take rows in one order.
_LAKES = text(
    f"SELECT l.lake_id, l.status FROM {SCHEMA}.lake AS l WHERE l.lake_id IN "
    f"(SELECT o.lake_id FROM {SCHEMA}.lake_observation AS o WHERE o.scene_id = ANY(:old)) "
    "ORDER BY l.lake_id FOR UPDATE OF l"
)


def supersede(
    conn: Connection, scene_id: int, aoi_id: int, s2_product_id: str, zone_part: str | None = None
) -> dict[int, str]:
    """Mark the AOI's other current scenes of ``s2_product_id`` superseded by ``scene_id``.

    ``zone_part``: the scene's UTM zone part (``inputs["zone_part"]``) for an AOI across zones,
    whose acquisitions give one scene per part: a part's scene supersedes that part's only.

    Returns:
        The lakes those scenes observed → their status now (to derive their histories again);
        empty when there was nothing to supersede.
    """
    marks = {"new": scene_id, "aoi": aoi_id, "s2": s2_product_id, "part": zone_part}
    old = [int(i) for i in conn.execute(_MARK, marks).scalars()]
    if not old:
        return {}
    return {int(i): str(s) for i, s in conn.execute(_LAKES, {"old": old})}
