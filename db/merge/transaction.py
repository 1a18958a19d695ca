"""The merge's transaction script: one scene in one transaction, step by step.

Lock the AOI and the ground the scene covers (:mod:`db.merge.locks`), check the ledger, insert
the scene, fetch the candidates (every lake on that ground, whichever AOI found it), decide identity
(:mod:`db.identity`), stage the outlines (:mod:`db.merge.staging`), insert lakes, lineage and
observations, extend the histories that can be (:mod:`db.merge.fast_path`) and rebuild the
others (:mod:`db.merge.rebuild`). The scene's outlines arrive in UTM (``ObservedLake.utm_epsg``)
and are projected to EPSG:4326 once, here, for storage and for the EPSG:4326 shortcuts of
identity matching; overlaps are measured on the scene's own UTM outlines where their CRS is the
AOI's.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

import numpy as np
import shapely
from shapely.geometry import MultiPolygon
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Connection, DateTime, Engine, bindparam, select, text
from sqlalchemy import insert as sa_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert

from core.errors import AoiError
from db.attributes import ATTRIBUTES
from db.geometry import as_multipolygon, lonlat_bounds, metric_transformer, project, to_lonlat
from db.identity import match_outlines
from db.ledger import check_params
from db.merge.backfill import backfill_absent
from db.merge.candidates import Candidates, dry_lakes, fetch_candidates, lineage_since
from db.merge.fast_path import FastPath, steps, write
from db.merge.locks import lock_aoi, lock_ground
from db.merge.rebuild import rebuild_history
from db.merge.sql import geom_param, row_hash
from db.merge.staging import mark_rebuilt, stage
from db.merge.supersede import supersede
from db.records import MergeConfig, MergeReport, ObservedLake, SceneResult
from db.schema import SCHEMA, aoi, lake_lineage, scene

log = logging.getLogger(__name__)

# A few bulk statements: JIT compilation costs more than it saves, and joins and sorts over one
# scene's rows (outlines included) should stay in memory.
_SETTINGS = (text("SET LOCAL jit = off"), text("SET LOCAL work_mem = '64MB'"))
_ALLOCATE = text(
    f"SELECT array_agg(nextval(pg_get_serial_sequence('{SCHEMA}.lake', 'lake_id'))) FROM generate_series(1, :n)"
)
"""``n`` new lake ids as one array (one row to fetch, not ``n``)."""

_NEW_LAKE_STATE = {"status": "'active'", "geom": "s.geom", **{k: f"s.{k}" for k in ATTRIBUTES}}
_NEW_LAKE_STATE |= {"first_seen": ":t", "last_seen": ":t", "last_observed": ":t", "n_observations": "1"}
INSERT_LAKES_SQL = text(
    f"INSERT INTO {SCHEMA}.lake (lake_id, status, geom, {', '.join(ATTRIBUTES)}, first_seen, last_seen, "
    "last_observed, n_observations, row_hash) "
    f"SELECT s.lake_id, 'active', s.geom, {', '.join(f's.{k}' for k in ATTRIBUTES)}, :t, :t, :t, 1, "
    f"{row_hash(_NEW_LAKE_STATE)} FROM _merge_obs AS s WHERE s.is_new"
).bindparams(bindparam("t", type_=DateTime(timezone=True)))
"""Lake rows of the staged new lakes, with the state of a lake seen once (a rebuild may refine it)."""

INSERT_PRESENT_SQL = text(
    f"INSERT INTO {SCHEMA}.lake_observation (scene_id, lake_id, sensing_time, present, geom, {', '.join(ATTRIBUTES)}) "
    f"SELECT :sid, s.lake_id, :t, true, s.geom, {', '.join(f's.{k}' for k in ATTRIBUTES)} FROM _merge_obs AS s"
)
"""This scene's present observations, from the staging table."""

INSERT_ABSENT_SQL = text(
    f"INSERT INTO {SCHEMA}.lake_observation (scene_id, lake_id, sensing_time, present) "
    "SELECT d.s, d.l, d.t, false FROM unnest(CAST(:l AS bigint[]), CAST(:s AS bigint[]), "
    "CAST(:t AS timestamptz[])) WITH ORDINALITY AS d(l, s, t, n) ORDER BY d.n"
)
"""Absent observations (lake, scene, time), in the order given."""


def ensure_aoi(engine: Engine, name: str, geometry: BaseGeometry, utm_epsg: int) -> int:
    """Insert or update the AOI ``name`` (outline EPSG:4326, scene grid CRS ``utm_epsg``); return its id.

    Raises:
        core.errors.InputError: ``utm_epsg`` is not a metric CRS. core.errors.AoiError: the
            outline is empty.
    """
    metric_transformer(utm_epsg)  # rejects a CRS that is not projected in metres
    outline = as_multipolygon(geometry)
    if outline is None:
        raise AoiError(f"AOI {name!r} has an empty outline")
    new = pg_insert(aoi).values(name=name, utm_epsg=utm_epsg, geom=geom_param())
    stmt = new.on_conflict_do_update(
        index_elements=[aoi.c.name], set_={"geom": new.excluded.geom, "utm_epsg": new.excluded.utm_epsg}
    ).returning(aoi.c.aoi_id)
    with engine.begin() as conn:
        return int(conn.execute(stmt, {"wkb": outline.wkb}).scalar_one())


def merge_scene(engine: Engine, result: SceneResult, config: MergeConfig = MergeConfig()) -> MergeReport:
    """Merge one scene in one transaction; a scene key already merged is a no-op.

    Args:
        engine: engine on the migrated inventory database.
        result: the scene's lakes (outlines in their ``utm_epsg``, areas in m² UTM) and valid
            footprint (in ``result.utm_epsg``).
        config: identity and change tolerances.

    Returns:
        What the merge wrote: ``observations`` present rows, ``absent`` rows (this scene's),
        ``new_lakes``, ``changed_lakes`` (existing lakes whose current version changed),
        ``disappeared`` / ``reappeared`` (current status flipped), ``versions_added`` (net).

    Raises:
        ValueError: naive sensing time. LookupError: AOI not registered with :func:`ensure_aoi`.
    """
    when = result.sensing_time
    if when.tzinfo is None:
        raise ValueError("SceneResult.sensing_time must be timezone-aware (UTC)")
    with _gc_paused():
        return _merge(engine, result, config)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the duration of a merge.

    A merge allocates some 10^5 short-lived containers, on which the collector would walk the
    whole heap again and again; reference counting still frees them. Restored on exit (left alone
    if someone else had it off).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def lonlat_outlines(lakes: Sequence[ObservedLake]) -> list[MultiPolygon | None]:
    """Each lake's outline in EPSG:4326 (repaired; None when nothing is left), projected per UTM zone."""
    out: list[MultiPolygon | None] = [None] * len(lakes)
    zones = np.asarray([o.utm_epsg for o in lakes], dtype=np.int64)
    for epsg in np.unique(zones).tolist():
        index = np.flatnonzero(zones == epsg).tolist()
        for i, g in zip(index, to_lonlat([lakes[i].geometry for i in index], epsg), strict=True):
            out[i] = g
    return out


def scene_ground(result: SceneResult) -> tuple[float, float, float, float] | None:
    """The lon/lat box (EPSG:4326) around a scene's outlines and valid footprint; None when it has neither.

    Computed from the UTM boxes (one per zone), so it needs no projection of the outlines: a
    no-op re-merge stays a lookup.
    """
    boxes = [lonlat_bounds([result.valid_footprint], result.utm_epsg)]
    zones = np.asarray([o.utm_epsg for o in result.lakes], dtype=np.int64)
    for epsg in np.unique(zones).tolist():
        boxes.append(lonlat_bounds([result.lakes[i].geometry for i in np.flatnonzero(zones == epsg)], epsg))
    present = [b for b in boxes if b is not None]
    if not present:
        return None
    x0, y0, x1, y1 = zip(*present, strict=True)
    return (min(x0), min(y0), max(x1), max(y1))


def _merge(engine: Engine, result: SceneResult, config: MergeConfig) -> MergeReport:
    when = result.sensing_time
    with engine.begin() as conn:
        lock_aoi(conn, result.aoi_name)
        # The ground next (before the ledger check: an identical key covers the same ground).
        locked = lock_ground(conn, scene_ground(result))
        if conn.execute(select(scene.c.scene_id).where(scene.c.scene_key == result.scene_key)).first():
            return MergeReport(scene_key=result.scene_key, noop=True)
        # The one projection to EPSG:4326 (storage, and identity's shortcuts), after the ledger
        # check: a re-run of a committed scene costs a lookup, not a projection of every outline.
        outlines = lonlat_outlines(result.lakes)
        observed = [(o, g) for o, g in zip(result.lakes, outlines, strict=True) if g is not None]
        if len(observed) < len(result.lakes):
            log.warning("scene %s: dropped %d empty outlines", result.scene_key, len(result.lakes) - len(observed))
        footprint_m = result.valid_footprint
        footprint = None if footprint_m is None else to_lonlat([footprint_m], result.utm_epsg)[0]
        row = conn.execute(select(aoi.c.aoi_id, aoi.c.utm_epsg).where(aoi.c.name == result.aoi_name)).first()
        if row is None:
            raise LookupError(f"unknown AOI {result.aoi_name!r}: register it with ensure_aoi first")
        aoi_id, epsg = int(row[0]), int(row[1])
        if not result.supersede:  # a rerun asks for its parameters: the explicit exception
            check_params(conn, aoi_id, result.params_hash, result.inputs)  # under the AOI lock
        for setting in _SETTINGS:
            conn.execute(setting)
        scene_id = _insert_scene(conn, result, aoi_id, footprint)
        replaced = {}
        if result.supersede:
            replaced = supersede(conn, scene_id, aoi_id, result.s2_product_id, result.inputs.get("zone_part"))

        extent = [g for _, g in observed] + ([footprint] if footprint is not None else [])
        cand = fetch_candidates(conn, when, tuple(shapely.total_bounds(extent)), locked) if extent else Candidates()
        # Overlaps in metres on the scene's own outlines where they are in the AOI's CRS.
        metric = [o.geometry if o.utm_epsg == epsg else None for o, _ in observed]
        plan = match_outlines([g for _, g in observed], cand.geoms, epsg, config.match_overlap, metric)
        matched = plan.matched_lakes
        absent: list[int] = []
        if footprint is not None:
            assert footprint_m is not None
            if result.utm_epsg != epsg:
                footprint_m = project([footprint], epsg)[0]
            unseen = {i: g for i, g in cand.geoms.items() if i not in matched}
            absent = dry_lakes(unseen, footprint, footprint_m, epsg, config)

        new_ids = _allocate_lake_ids(conn, len(plan.new))
        lake_of = {**plan.continues, **dict(zip(plan.new, new_ids, strict=True))}
        links = [(a, c, "merged") for a, c in plan.merges] + [(par, lake_of[p], "split") for par, p in plan.splits]
        split_children = {lake_of[p] for _, p in plan.splits}
        # History: extended here from each lake's tip where that suffices, else derived again.
        rebuild = {i for a, c, kind in links for i in (a, c) if kind == "merged"} | lineage_since(conn, when)
        rebuild |= set(replaced)  # their superseded observations no longer count
        areas = [o.area_m2 for o, _ in observed]
        extended = steps(cand, lake_of, areas, absent, rebuild, when, config)
        rebuild |= {i for i in (*plan.continues.values(), *absent) if i not in extended}
        opened = {i: (cand.area(i), areas[p]) for p, i in plan.continues.items() if extended.get(i)}

        stage(conn, observed, lake_of, set(new_ids), split_children, extended)
        if new_ids:
            conn.execute(INSERT_LAKES_SQL, {"t": when})
        _insert_lineage(conn, scene_id, when, links)
        late = backfill_absent(conn, scene_id, when, epsg, new_ids, split_children, config)
        if late:
            mark_rebuilt(conn, {i for i, _, _ in late})
            rebuild |= {i for i, _, _ in late}
        _insert_observations(conn, scene_id, when, absent, late)
        fast = FastPath(
            opened={i: a for i, a in opened.items() if i not in rebuild},
            dry=sorted(i for i in absent if i in extended and i not in rebuild),
            wet=any(i in extended and i not in rebuild for i in plan.continues.values()),
            first_versions=len(new_ids) > len({i for i, _, _ in late}),
        )
        counts = write(conn, scene_id, result.model_version, when, fast)

        touched = set(lake_of.values()) | set(absent) | {a for a, _ in plan.merges} | set(replaced)
        status_before = {**replaced, **{i: cand.status(i) for i in touched & rebuild if i in cand.position}}
        rebuilt = rebuild_history(conn, sorted(touched & rebuild), status_before, config)
    return MergeReport(
        scene_key=result.scene_key,
        noop=False,
        observations=len(lake_of),
        absent=len(absent),
        new_lakes=len(new_ids),
        **{k: counts[k] + rebuilt[k] for k in counts},
    )


def _allocate_lake_ids(conn: Connection, n: int) -> list[int]:
    """``n`` new lake ids from the identity sequence, ascending."""
    if n == 0:
        return []
    return sorted(conn.execute(_ALLOCATE, {"n": n}).scalar_one())


def _insert_scene(conn: Connection, result: SceneResult, aoi_id: int, footprint: MultiPolygon | None) -> int:
    """The scene's row (footprint in EPSG:4326); returns its id."""
    row = {
        "scene_key": result.scene_key,
        "aoi_id": aoi_id,
        "sensing_time": result.sensing_time,
        "s2_product_id": result.s2_product_id,
        "s1_product_id": result.s1_product_id,
        "dem_id": result.dem_id,
        "inputs": dict(result.inputs),
        "model_version": result.model_version,
        "params_hash": result.params_hash,
        "cloud_fraction": result.cloud_fraction,
        "valid_fraction": result.valid_fraction,
        "wkb": footprint.wkb if footprint is not None else None,
    }
    stmt = sa_insert(scene).values(valid_footprint=geom_param()).returning(scene.c.scene_id)
    return int(conn.execute(stmt, row).scalar_one())


def _insert_lineage(conn: Connection, scene_id: int, when: datetime, links: Sequence[tuple[int, int, str]]) -> None:
    """Lineage rows (parent, child, kind); a pair linked before keeps the earliest sensing time."""
    if not links:
        return
    lin = lake_lineage
    stmt = pg_insert(lin)
    stmt = stmt.on_conflict_do_update(
        index_elements=[lin.c.parent_lake_id, lin.c.child_lake_id],
        set_={"sensing_time": stmt.excluded.sensing_time, "scene_id": stmt.excluded.scene_id},
        where=stmt.excluded.sensing_time < lin.c.sensing_time,
    )
    keys = ("parent_lake_id", "child_lake_id", "kind")
    conn.execute(
        stmt, [{**dict(zip(keys, link, strict=True)), "scene_id": scene_id, "sensing_time": when} for link in links]
    )


def _insert_observations(
    conn: Connection,
    scene_id: int,
    when: datetime,
    absent: Sequence[int],
    late_absent: Sequence[tuple[int, int, datetime]] = (),
) -> None:
    """This scene's present rows (from ``_merge_obs``), then its absent rows, then backfilled absent rows."""
    conn.execute(INSERT_PRESENT_SQL, {"sid": scene_id, "t": when})
    dry = [(i, scene_id, when) for i in absent] + list(late_absent)
    if dry:
        lake_ids, scene_ids, times = (list(col) for col in zip(*dry, strict=True))
        conn.execute(INSERT_ABSENT_SQL, {"l": lake_ids, "s": scene_ids, "t": times})
