"""Absent rows for new lakes from scenes merged before, which saw their place dry.

A lake first found by a scene merged *after* other scenes gets absent rows for those scenes, so
the observations, and hence the history, do not depend on the order of arrival. Any AOI's scenes
count: identity is spatial, and a scene of an overlapping AOI that saw the place dry saw it dry.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Connection, func, select

from db.geometry import project
from db.identity import absent_lakes, match_polygons
from db.merge.sql import in_ids
from db.records import MergeConfig
from db.schema import lake, lake_observation, scene


def backfill_absent(
    conn: Connection,
    scene_id: int,
    when: datetime,
    epsg: int,
    new_ids: Sequence[int],
    split_children: set[int],
    config: MergeConfig,
) -> list[tuple[int, int, datetime]]:
    """(lake, scene, time) absent rows for new lakes in scenes merged before that saw their place dry.

    A scene qualifies when its valid footprint covers the lake (``min_footprint_cover``, measured
    in ``epsg``) and none of its water overlaps the lake (``match_overlap``): the same test a lake
    known then would have met. A split child only gets rows from scenes after its split.
    """
    if not new_ids:
        return []
    s, lk, obs = scene, lake, lake_observation
    others = select(s.c.scene_id).where(
        s.c.scene_id != scene_id, s.c.valid_footprint.isnot(None), s.c.superseded_by.is_(None)
    )
    if conn.execute(others.limit(1)).first() is None:  # the inventory's first scene: nothing to look back at
        return []
    pairs = conn.execute(
        select(
            lk.c.lake_id,
            s.c.scene_id,
            s.c.sensing_time,
            func.ST_AsBinary(lk.c.geom),
            func.ST_AsBinary(func.ST_Intersection(s.c.valid_footprint, func.ST_Envelope(lk.c.geom))),
        )
        .join_from(lk, s, s.c.valid_footprint.op("&&")(lk.c.geom))
        .where(in_ids(lk.c.lake_id, new_ids), s.c.scene_id != scene_id, s.c.superseded_by.is_(None))
    ).all()
    pairs = [p for p in pairs if p[0] not in split_children or p[2] > when]
    if not pairs:
        return []
    wet: dict[tuple[int, int], list[BaseGeometry]] = {}
    for lake_id, sid, wkb in conn.execute(
        select(lk.c.lake_id, obs.c.scene_id, func.ST_AsBinary(obs.c.geom))
        .join_from(lk, obs, obs.c.geom.op("&&")(lk.c.geom))
        .where(in_ids(lk.c.lake_id, new_ids), obs.c.present, in_ids(obs.c.scene_id, {p[1] for p in pairs}))
    ):
        wet.setdefault((lake_id, sid), []).append(shapely.from_wkb(bytes(wkb)))
    out = []
    for lake_id, sid, t, lake_wkb, fp_wkb in pairs:
        lake_m, fp_m = project([shapely.from_wkb(bytes(lake_wkb)), shapely.from_wkb(bytes(fp_wkb))], epsg)
        if not absent_lakes({lake_id: lake_m}, fp_m, config.min_footprint_cover):
            continue
        water = dict(enumerate(project(wet.get((lake_id, sid), []), epsg)))
        if not match_polygons([lake_m], water, config.match_overlap).matched_lakes:
            out.append((lake_id, sid, t))
    return out
