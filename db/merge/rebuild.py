"""The merge's full path: histories derived again from all of a lake's observations and lineage.

Used for the lakes the fast path declines (backfills, repeated sensing times, disappearance and
reappearance runs, splits and merges): their observations and lineage are loaded, their history
derived (:func:`db.history.derive_history`), and versions and lake rows rewritten where they
differ from what is stored (an unchanged history keeps its rows and ids).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import Range

from db.attributes import ATTRIBUTES, EXTRA_ATTRIBUTES
from db.history import (
    ABSORBED_INTO,
    ABSORBED_OTHERS,
    ACTIVE,
    BORN_BY_SPLIT,
    DISAPPEARED,
    LakeHistory,
    LineageEvent,
    Observation,
    Version,
    derive_history,
)
from db.merge.sql import ROW_HASH_OF_ROW, in_ids
from db.records import MergeConfig
from db.schema import SCHEMA, lake, lake_lineage, lake_observation, lake_version, scene

_obs, _ver, _lin = lake_observation, lake_version, lake_lineage

VersionKey = tuple[Any, ...]
"""A version as stored: (from, to, kind, status, area, Δarea, rate, scene)."""


def attributes_of(o: Observation | None) -> dict[str, float | None]:
    """The attribute columns' values of an observation (all None for none)."""
    if o is None:
        return dict.fromkeys(ATTRIBUTES)
    return {"area_m2": o.area_m2, "perimeter_m": o.perimeter_m, **{k: o.attributes.get(k) for k in EXTRA_ATTRIBUTES}}


def version_key(v: Version) -> VersionKey:
    """A version as stored: (from, to, kind, status, area, Δarea, rate, scene); pins its outline too."""
    return (
        v.valid_from,
        v.valid_to,
        v.change_kind,
        v.status,
        v.source.area_m2,
        v.area_change_m2,
        v.growth_rate_m2_per_year,
        v.scene_id,
    )


def _current(keys: Sequence[VersionKey]) -> VersionKey | None:
    """The part of the current version's key that a change of the lake alters (from, kind, status, area)."""
    return (keys[-1][0], *keys[-1][2:5]) if keys else None


def load(
    conn: Connection, ids: Sequence[int], config: MergeConfig
) -> tuple[dict[int, LakeHistory], dict[int, list[VersionKey]]]:
    """Derive the lakes' histories from their live observations; also return their stored version keys.

    Live: not of a superseded scene (:mod:`db.merge.supersede`).
    """
    observations: dict[int, list[Observation]] = {i: [] for i in ids}
    names = ("observation_id", "sensing_time", "present", "area_m2", "perimeter_m", "scene_id", *EXTRA_ATTRIBUTES)
    query = select(_obs.c.lake_id, *[_obs.c[k] for k in names], scene.c.scene_key, scene.c.model_version)
    live = query.join(scene, scene.c.scene_id == _obs.c.scene_id).where(
        in_ids(_obs.c.lake_id, ids),
        scene.c.superseded_by.is_(None),  # a superseded scene's are no facts now
    )
    for r in conn.execute(live):
        m = r._mapping
        observations[r.lake_id].append(
            Observation(
                **{k: m[k] for k in names if k not in EXTRA_ATTRIBUTES},
                attributes={k: m[k] for k in EXTRA_ATTRIBUTES},
                order_key=r.scene_key,
                model_version=r.model_version,
            )
        )
    events: dict[int, list[LineageEvent]] = {i: [] for i in ids}
    links = select(_lin.c.parent_lake_id, _lin.c.child_lake_id, _lin.c.kind, _lin.c.sensing_time, _lin.c.scene_id)
    for parent, child, kind, t, sid in conn.execute(
        links.where(in_ids(_lin.c.parent_lake_id, ids) | in_ids(_lin.c.child_lake_id, ids))
    ):
        roles = [(child, BORN_BY_SPLIT)] if kind == "split" else [(parent, ABSORBED_INTO), (child, ABSORBED_OTHERS)]
        for lake_id, role in roles:
            if lake_id in events:
                events[lake_id].append(LineageEvent(t, role, sid))
    stored: dict[int, list[VersionKey]] = {i: [] for i in ids}
    lower, upper = func.lower(_ver.c.valid), func.upper(_ver.c.valid)
    key_columns = [_ver.c[k] for k in ("change_kind", "status", "area_m2", "area_change_m2", "growth_rate_m2_per_year")]
    query = select(_ver.c.lake_id, lower, upper, *key_columns, _ver.c.scene_id).where(in_ids(_ver.c.lake_id, ids))
    for r in conn.execute(query.order_by(_ver.c.lake_id, lower)):
        stored[r[0]].append(tuple(r[1:]))
    return {i: derive_history(observations[i], events[i], config) for i in ids}, stored


SUPERSEDED = "superseded"
"""Status of a lake that only superseded scenes saw (no version, not in any view of the inventory)."""

_REHASH = text(f"UPDATE {SCHEMA}.lake SET row_hash = {ROW_HASH_OF_ROW} WHERE lake_id = ANY(:ids)")
"""The hash of the rows as they stand (the rebuild writes the state first, then the hash)."""


def rebuild_history(
    conn: Connection, ids: Sequence[int], status_before: Mapping[int, str], config: MergeConfig
) -> dict[str, int]:
    """Re-derive the touched lakes' versions and lake rows; return the report's change counts."""
    if not ids:
        return {"changed_lakes": 0, "disappeared": 0, "reappeared": 0, "versions_added": 0}
    histories, stored = load(conn, ids, config)
    derived = {i: [version_key(v) for v in histories[i].versions] for i in ids}
    rewrite = [i for i in ids if derived[i] != stored[i]]  # unchanged histories keep their rows (and ids)
    if rewrite:
        conn.execute(delete(_ver).where(in_ids(_ver.c.lake_id, rewrite)))
        rows = [
            {
                "lake_id": i,
                "valid": Range(v.valid_from, v.valid_to, bounds="[)"),
                "change_kind": v.change_kind,
                "status": v.status,
                "area_change_m2": v.area_change_m2,
                "growth_rate_m2_per_year": v.growth_rate_m2_per_year,
                "scene_id": v.scene_id,
                "model_version": v.model_version,
                "src": v.source.observation_id,
                **attributes_of(v.source),
            }
            for i in rewrite
            for v in histories[i].versions
        ]
        if rows:
            outline = select(_obs.c.geom).where(_obs.c.observation_id == bindparam("src")).scalar_subquery()
            conn.execute(insert(_ver).values(geom=outline), rows)

    states = {i: h.state for i, h in histories.items() if h.state is not None}
    if states:
        columns = ("status", "first_seen", "last_seen", "last_observed", "n_observations", *ATTRIBUTES)
        outline = select(_obs.c.geom).where(_obs.c.observation_id == bindparam("b_src")).scalar_subquery()
        stmt = (
            update(lake)
            .where(lake.c.lake_id == bindparam("b_id"))
            .values(geom=outline, updated_at=func.now(), **{c: bindparam(f"b_{c}") for c in columns})
        )
        conn.execute(
            stmt,
            [
                {
                    "b_id": i,
                    "b_src": s.source.observation_id,
                    **{f"b_{c}": getattr(s, c) for c in columns[:5]},
                    **{f"b_{k}": val for k, val in attributes_of(s.source).items()},
                }
                for i, s in states.items()
            ],
        )
        conn.execute(_REHASH, {"ids": sorted(states)})
    gone = sorted(i for i, h in histories.items() if h.state is None)
    if gone:  # seen only by superseded scenes: out of the inventory, its facts kept
        conn.execute(update(lake).where(in_ids(lake.c.lake_id, gone)).values(status=SUPERSEDED, updated_at=func.now()))
        conn.execute(_REHASH, {"ids": gone})

    kind_now = {i: (derived[i][-1][2] if derived[i] else None) for i in ids}
    return {
        "changed_lakes": sum(1 for i in status_before if _current(derived[i]) != _current(stored[i])),
        "disappeared": sum(1 for i, s in status_before.items() if s == ACTIVE and kind_now[i] == DISAPPEARED),
        "reappeared": sum(1 for i, s in status_before.items() if s == DISAPPEARED and kind_now[i] == "reappeared"),
        "versions_added": sum(len(derived[i]) - len(stored[i]) for i in ids),
    }
